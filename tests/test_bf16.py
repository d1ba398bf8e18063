"""Mixed precision (``ModelConfig.dtype``): bfloat16 compute with float32 parameters, BatchNorm statistics,
logits and loss; validated, a CLI flag, respected by the CPU conv backward, loads float32 students, and an
online run in bfloat16 scores like one in float32."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import stream
from jitnet_jax.config import ModelConfig, OnlineConfig, OptimConfig, StudentConfig, override
from jitnet_jax.data.synthetic import SyntheticStream
from jitnet_jax.online.runner import run_stream
from jitnet_jax.run_config import make_config
from jitnet_jax.student.metrics import iou_from_counts
from jitnet_jax.student.pretrained import load_student, load_student_for_classes, resolve_init, save_student
from jitnet_jax.student.step import init_state, loss_and_grads, predict, predict_logits

H, W = 24, 32
F32 = StudentConfig(model=ModelConfig(num_classes=4), optim=OptimConfig(name="sgd", lr=0.01))
BF16 = dataclasses.replace(F32, model=dataclasses.replace(F32.model, dtype="bfloat16"))


def _frame(seed: int = 0) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    rng = np.random.default_rng(seed)
    frame = jnp.asarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    label = jnp.asarray(rng.integers(0, 4, (H, W)).astype(np.int32))
    return frame, label, jnp.ones((H, W), jnp.float32)


def _dtypes(tree) -> set[str]:
    return {np.dtype(x.dtype).name for x in jax.tree_util.tree_leaves(tree)}


def test_dtype_is_a_validated_config_field_and_a_flag() -> None:
    assert F32.model.dtype == "float32"  # the default, on every backend
    with pytest.raises(ValueError, match=r"model.dtype must be one of .*got 'float16'") as e:
        ModelConfig(dtype="float16").validate()
    assert "\n" not in str(e.value)
    hash(BF16)  # static under jit
    assert override(OnlineConfig(), ["student.model.dtype=bfloat16"]).student.model.dtype == "bfloat16"
    for flag in ("bfloat16", "auto"):
        cfg = make_config(stream.build_parser().parse_args(["--dtype", flag]))
        assert cfg.online.student.model.dtype == flag
    assert make_config(stream.build_parser().parse_args([])).online.student.model.dtype == "float32"


def test_bf16_computes_in_bf16_and_keeps_params_stats_logits_and_loss_in_float32() -> None:
    frame, label, weight = _frame()
    state = init_state(jax.random.key(0), BF16, (H, W))
    assert _dtypes(state.params) == _dtypes(state.batch_stats) == {"float32"}
    assert _dtypes(state.opt_state) - {"int32"} == {"float32"}  # the optimiser's counts are int32
    jaxpr = str(jax.make_jaxpr(lambda s, f: predict_logits(BF16, s, f))(state, frame))
    assert "bf16" in jaxpr and "bf16" not in str(
        jax.make_jaxpr(lambda s, f: predict_logits(F32, s, f))(state, frame)
    )
    grads, stats, aux = jax.jit(lambda s, f, y, w: loss_and_grads(BF16, s, f, y, w))(
        state, frame, label, weight
    )
    assert _dtypes(grads) == _dtypes(stats) == {"float32"}
    assert aux["loss"].dtype == jnp.float32 and aux["min_iou"].dtype == jnp.float32
    assert predict_logits(BF16, state, frame).dtype == jnp.float32
    # the same function as float32, to bfloat16's precision
    ref, _, ref_aux = jax.jit(lambda s, f, y, w: loss_and_grads(F32, s, f, y, w))(state, frame, label, weight)
    assert float(aux["loss"]) == pytest.approx(float(ref_aux["loss"]), rel=0.02)
    g, r = np.asarray(grads["logits"]["kernel"]), np.asarray(ref["logits"]["kernel"])
    assert np.linalg.norm(g - r) <= 0.1 * np.linalg.norm(r)


def test_the_cpu_conv_backward_runs_in_bf16_like_xla() -> None:
    """``conv_backward="matmul"`` (the CPU workaround, model/conv.py) on bfloat16 activations: float32
    parameter gradients equal to XLA's own bfloat16 gradients up to bfloat16 rounding."""
    frame, label, weight = _frame(1)
    state = init_state(jax.random.key(1), BF16, (H, W))
    out = {}
    for mode in ("matmul", "xla"):
        cfg = dataclasses.replace(BF16, model=dataclasses.replace(BF16.model, conv_backward=mode))
        out[mode] = jax.jit(lambda s, f, y, w, c=cfg: loss_and_grads(c, s, f, y, w)[0])(
            state, frame, label, weight
        )
    assert _dtypes(out["matmul"]) == {"float32"}
    xla = jax.tree_util.tree_leaves(out["xla"])
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(out["matmul"]), xla):
        if path[-1].key == "kernel":
            a, b = np.asarray(a), np.asarray(b)
            assert np.linalg.norm(a - b) <= 0.05 * np.linalg.norm(b) + 1e-6, jax.tree_util.keystr(path)


def test_float32_students_load_into_a_bf16_run(tmp_path) -> None:
    """A float32 checkpoint (``save_student``, ``--init``) and the shipped CamVid student load into a bfloat16
    model unchanged (the parameters stay float32; only the compute dtype differs)."""
    state = init_state(jax.random.key(0), F32, (H, W))
    save_student(tmp_path / "s", state, F32.model)
    params, stats = load_student(tmp_path / "s", BF16.model)
    assert _dtypes(params) == _dtypes(stats) == {"float32"}
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    model = ModelConfig(num_classes=2, dtype="bfloat16")
    params, stats, _ = load_student_for_classes(
        resolve_init("camvid"), model, ["background", "person"], jax.random.key(0)
    )
    assert _dtypes(params) == {"float32"}
    cfg = dataclasses.replace(BF16, model=model)
    student = init_state(jax.random.key(0), cfg, (H, W)).replace(params=params, batch_stats=stats)
    pred = predict(cfg, student, _frame()[0])
    assert pred.shape == (H, W) and pred.dtype == jnp.int32


@pytest.mark.slow
def test_a_bf16_run_scores_within_003_miou_of_float32() -> None:
    """The online loop on a synthetic stream completes in bfloat16 and its stream mIoU is within 0.03 of the
    float32 run's."""
    source = SyntheticStream(num_frames=96, height=48, width=64, seed=3)
    miou = {}
    for name, scfg in (("float32", F32), ("bfloat16", BF16)):
        cfg = OnlineConfig(student=scfg, chunk_size=16, delta_min=4, delta_max=16)
        pf = run_stream(source, cfg, jax.random.key(0), progress=False).per_frame
        assert len(pf["frame"]) == 96 and pf["updates"].sum() > 0
        miou[name] = iou_from_counts(pf["tp"].sum(0), pf["fp"].sum(0), pf["fn"].sum(0))["miou"]
    assert miou["float32"] > 0.3, miou  # the student learned something: the comparison means something
    assert abs(miou["bfloat16"] - miou["float32"]) <= 0.03, miou
