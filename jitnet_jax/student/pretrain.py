"""Offline pretraining of the student from labelled examples, with augmentation, in a scanned epoch.

The pipeline (dataset-agnostic; the entry point ``experiments.pretrain`` reads the data and passes it in):

1. **Examples** ``(frames uint8 [K,H,W,3], labels uint8 [K,H,W], weights float32 [K,H,W])`` with labels
   already in the student's label space (:func:`class_map` maps source class names to the student's
   class-group names; ``IGNORE_LABEL`` = ignored). Weights follow the label-store convention: > 1 is
   foreground ("inside a box"), (0, 1] background, 0 ignored; :func:`pretrain` maps them to
   ``fg_weight`` / ``bg_weight`` as the online engine does.
   Sources: :func:`store_examples` (teacher label stores of LVS streams), :func:`segmentation_examples`
   (any labelled segmentation set given as arrays plus label-id names, e.g. CamVid through
   ``teacher.tfds_camvid``), :func:`tfds_examples` (any tfds dataset by name, read without TensorFlow).
2. **Augmentation** (:class:`Augment`, :func:`augment_example`): a random window of the output aspect ratio
   (e.g. 16:9) covering ``[min_scale, max_scale]`` of the largest such window, resampled to
   ``(height, width)`` (bilinear image, nearest label), a horizontal flip, and brightness / contrast /
   saturation jitter. All randomness comes from explicit PRNG keys (one per example per step).
3. **Training** (:func:`pretrain`): every epoch is one jitted call: ``lax.scan`` over the steps of a random
   permutation, each step a batch of ``batch_size`` augmented examples. BatchNorm normalises each frame with
   its own statistics (the model is ``vmap``-ed over the batch), exactly as the student runs online and in
   prediction (``bn_mode="batch"``, one frame at a time).
4. **Evaluation** (:func:`evaluate`): the confusion matrix over a test split, each frame resampled whole to
   the evaluation size; :func:`~jitnet_jax.student.metrics.stream_iou` turns it into per-class IoU.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jitnet_jax.config import OnlineConfig, StudentConfig
from jitnet_jax.data.store_source import StoreSource
from jitnet_jax.data.types import IGNORE_LABEL
from jitnet_jax.student.losses import weighted_cross_entropy
from jitnet_jax.student.metrics import confusion_matrix
from jitnet_jax.student.step import StudentState, apply_grads, apply_model, init_state

Examples = tuple[np.ndarray, np.ndarray, np.ndarray]  # frames uint8 [K,H,W,3], labels uint8 [K,H,W], weights

#: Source class names that mean "no label" (mapped to ``IGNORE_LABEL``).
IGNORE_NAMES = frozenset({"unlabelled", "unlabeled", "void", "ignore", "ignored"})
#: Source class names that name a student (COCO) class differently.
SYNONYMS = {
    "pedestrian": "person",
    "people": "person",
    "bicyclist": "bicycle",
    "cyclist": "bicycle",
    "motorcyclist": "motorcycle",
}


def _aliases(name: str) -> set[str]:
    """The COCO names of a class or group name (``car_bus_truck`` -> car, bus, truck; spaces as ``-``)."""
    parts = set(name.replace(" ", "-").split("_"))
    return parts | {SYNONYMS[p] for p in parts if p in SYNONYMS}


def class_map(
    source_names: Sequence[str], target_names: Sequence[str], *, require_all: bool = False, source: str = ""
) -> np.ndarray:
    """uint8 ``[256]`` lookup from source label ids to target label ids (by class name).

    ``source_names[i]`` names source id ``i``; target id 0 is ``background``. A source class maps to the
    first target whose name or group members match its name (synonyms such as ``pedestrian`` -> person
    count); unmatched classes -> 0 (background); names in :data:`IGNORE_NAMES` and id ``IGNORE_LABEL`` ->
    ``IGNORE_LABEL``.

    Args:
      require_all: raise when a target class (other than background) has no source class.
      source: the dataset's name, for the error message.
    Raises:
      ValueError: targets do not start with background, or (``require_all``) a target class is missing.
    """
    if not target_names or target_names[0] != "background":
        raise ValueError(f"target classes must start with 'background', got {list(target_names)}")
    lut = np.zeros(256, np.uint8)
    lut[IGNORE_LABEL] = IGNORE_LABEL
    for i, name in enumerate(source_names):
        if i >= IGNORE_LABEL:
            continue
        if name.lower() in IGNORE_NAMES:
            lut[i] = IGNORE_LABEL
            continue
        if i == 0 and name == "background":
            continue
        for j, target in enumerate(target_names[1:], start=1):
            if name == target or _aliases(name) & _aliases(target):
                lut[i] = j
                break
    if require_all:
        mapped = set(lut[: min(len(source_names), IGNORE_LABEL)].tolist())
        missing = [t for j, t in enumerate(target_names) if j > 0 and j not in mapped]
        if missing:
            raise ValueError(
                f"{source or 'dataset'} has no class for {', '.join(missing)} (its classes: "
                f"{', '.join(source_names)})"
            )
    return lut


def label_weights(labels: np.ndarray, fg_weight: float = 2.0) -> np.ndarray:
    """float32 weights in the label-store convention: ``fg_weight`` (> 1) on classes >= 1, 1 on
    background, 0 on ``IGNORE_LABEL``."""
    if not fg_weight > 1:
        raise ValueError(f"fg_weight must be > 1 (the store convention for foreground), got {fg_weight}")
    return np.where(labels == IGNORE_LABEL, 0.0, np.where(labels > 0, fg_weight, 1.0)).astype(np.float32)


def segmentation_examples(
    images: np.ndarray,
    labels: np.ndarray,
    label_names: Sequence[str],
    target_names: Sequence[str],
    *,
    source: str = "dataset",
) -> Examples:
    """Examples from a labelled segmentation set given as arrays (labels mapped by class name).

    Args:
      images: uint8 ``[K, H, W, 3]``; labels: int ``[K, H, W]`` source ids named by ``label_names``.
      target_names: the student's classes, background first.
      source: the dataset's name for error messages.
    Raises:
      ValueError: shapes disagree, or a target class has no source class of that name.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"{source}: images must be uint8 [K, H, W, 3], got {images.dtype} {images.shape}")
    if labels.shape != images.shape[:3] or len(images) == 0:
        raise ValueError(f"{source}: labels {labels.shape} do not match images {images.shape}")
    lut = class_map(label_names, target_names, require_all=True, source=source)
    y = lut[np.clip(labels, 0, 255).astype(np.uint8)]
    return images, y, label_weights(y)


def store_examples(
    store_dirs: Sequence[str | Path],
    target_names: Sequence[str],
    every: int = 4,
    max_frames: int | None = None,
    progress: bool = True,
) -> Examples:
    """Every ``every``-th frame (up to ``max_frames`` of each stream) of complete label stores, with labels
    mapped to ``target_names``."""
    fs, ys, ws = [], [], []
    shape = None
    for d in store_dirs:
        src = StoreSource(d)
        if shape is None:
            shape = (src.info.height, src.info.width)
        elif (src.info.height, src.info.width) != shape:
            raise ValueError(
                f"{d}: store is {src.info.height}x{src.info.width}, others are {shape[0]}x{shape[1]}"
            )
        lut = class_map(src.info.class_names, target_names)
        n0 = len(fs)
        stop = src.info.num_frames if max_frames is None else min(src.info.num_frames, max_frames)
        for chunk in src.chunks(64):
            if chunk.start >= stop:
                break
            for j in np.flatnonzero(chunk.valid):
                if chunk.start + j < stop and (chunk.start + j) % every == 0:
                    fs.append(chunk.frames[j])
                    ys.append(lut[chunk.labels[j]])
                    ws.append(chunk.regions[j])
        if progress:
            print(
                f"pretrain: {len(fs) - n0} examples from {src.info.name} {list(src.info.class_names)}",
                file=sys.stderr,
            )
    if not fs:
        raise ValueError("no pretraining examples (no stores given, or every stream excluded)")
    return np.stack(fs), np.stack(ys), np.stack(ws).astype(np.float32)


def _resize_nearest(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of ``[h, w, ...]`` to ``[height, width, ...]``."""
    rows = (np.arange(height) * x.shape[0] // height).clip(0, x.shape[0] - 1)
    cols = (np.arange(width) * x.shape[1] // width).clip(0, x.shape[1] - 1)
    return x[rows][:, cols]


def panoptic_to_semantic(
    panoptic_image: np.ndarray,
    segment_ids: np.ndarray,
    segment_labels: np.ndarray,
    label_names: Sequence[str],
    lut_names: np.ndarray,
) -> np.ndarray:
    """COCO panoptic PNG (``id = R + 256 G + 256^2 B``) to target labels (uint8 ``[h, w]``).

    ``segment_labels`` index ``label_names``; ``lut_names[k]`` is the target id of ``label_names[k]``.
    """
    rgb = panoptic_image.astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    out = np.zeros(ids.shape, np.uint8)
    for sid, lab in zip(np.asarray(segment_ids).ravel(), np.asarray(segment_labels).ravel()):
        out[ids == sid] = lut_names[int(lab)]
    return out


def tfds_examples(
    name: str,
    target_names: Sequence[str],
    height: int | None,
    width: int | None,
    *,
    split: str = "train",
    data_dir: str | None = None,
    max_examples: int = 1000,
    image_key: str = "image",
    label_key: str = "segmentation_mask",
    label_names: Sequence[str] | None = None,
    fg_weight: float = 2.0,
) -> Examples:
    """Examples from a prepared tensorflow-datasets segmentation dataset via ``tfds.data_source``.

    COCO panoptic (features ``panoptic_image`` and ``panoptic_objects``) is decoded to semantic labels;
    otherwise ``image_key`` is the uint8 image and ``label_key`` an int label map whose ids are named by
    ``label_names`` (default: the feature's ``names``, or the dataset metadata's ``class_names``). Every
    target class must have a source class of that name. ``height``/``width`` None keep the stored size
    (all examples must then share it). Foreground pixels get weight ``fg_weight`` (> 1, read as "inside
    a box" by the engine's weighting), background pixels weight 1, ignored pixels 0.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ImportError("--tfds needs tensorflow-datasets (pip install tensorflow-datasets)") from None
    ds = tfds.data_source(name, split=split, data_dir=data_dir)
    features = ds.dataset_info.features
    panoptic = "panoptic_image" in features and "panoptic_objects" in features
    if panoptic:
        names = list(features["panoptic_objects"]["label"].names)
        lut_names = class_map(["background", *names], target_names, require_all=True, source=f"tfds {name}")
        lut_names = lut_names[1 : len(names) + 1]
    else:
        if label_names is None:
            label_names = getattr(features[label_key], "names", None)
        if label_names is None:
            label_names = (ds.dataset_info.metadata or {}).get("class_names")
        if label_names is None:
            raise ValueError(f"tfds {name}: feature {label_key!r} has no class names; pass --label-names")
        lut = class_map(list(label_names), target_names, require_all=True, source=f"tfds {name}")
    fs, ys, ws = [], [], []
    for k in range(min(len(ds), max_examples)):
        ex = ds[k]
        image = np.asarray(ex["image" if panoptic else image_key])
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"tfds {name}[{k}]: image must be [h, w, 3], got shape {image.shape}")
        if panoptic:
            objs = ex["panoptic_objects"]
            label = panoptic_to_semantic(
                np.asarray(ex["panoptic_image"]), objs["id"], objs["label"], names, lut_names
            )
        else:
            raw = np.asarray(ex[label_key])
            label = lut[np.clip(raw.reshape(raw.shape[:2]), 0, 255).astype(np.uint8)]
        h, w = (height or image.shape[0]), (width or image.shape[1])
        fs.append(_resize_nearest(image.astype(np.uint8), h, w))
        y = _resize_nearest(label, h, w)
        ys.append(y)
        ws.append(label_weights(y, fg_weight))
    if not fs:
        raise ValueError(f"tfds {name}: split {split!r} is empty")
    if len({f.shape for f in fs}) > 1:
        raise ValueError(f"tfds {name}: examples differ in size; give --height and --width")
    return np.stack(fs), np.stack(ys), np.stack(ws)


# ----------------------------------------------------------------------------------------- augmentation


@dataclasses.dataclass(frozen=True)
class Augment:
    """Random-window augmentation (static under jit).

    Attributes:
      height, width: output size; the window has this aspect ratio.
      min_scale, max_scale: window side as a fraction of the largest window of that aspect that fits
        the source frame (1 = largest; smaller zooms in).
      flip: random horizontal flip.
      brightness, contrast, saturation: jitter amplitudes; factors are drawn from ``1 +- amplitude``.
    """

    height: int = 180
    width: int = 320
    min_scale: float = 0.6
    max_scale: float = 1.0
    flip: bool = True
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25

    def validate(self) -> Augment:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"augment size must be positive, got {self.height}x{self.width}")
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError(f"need 0 < min_scale <= max_scale <= 1, got {self.min_scale}, {self.max_scale}")
        for f in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, f) < 1:
                raise ValueError(f"augment {f} must be in [0, 1), got {getattr(self, f)}")
        return self


def _axis_coords(start: jnp.ndarray, length: jnp.ndarray, out: int, size: int) -> tuple[jnp.ndarray, ...]:
    """Sample positions of ``out`` pixel centres spread over ``[start, start + length)`` of an axis of
    ``size``: ``(lo int32 [out], hi int32 [out], frac float32 [out], nearest int32 [out])``."""
    pos = start + (jnp.arange(out, dtype=jnp.float32) + 0.5) * (length / out) - 0.5
    pos = jnp.clip(pos, 0.0, size - 1.0)
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, size - 1)
    return lo, hi, pos - lo, jnp.round(pos).astype(jnp.int32)


def resample_window(
    frame: jnp.ndarray,
    label: jnp.ndarray,
    weight: jnp.ndarray,
    y0: jnp.ndarray,
    x0: jnp.ndarray,
    win_h: jnp.ndarray,
    win_w: jnp.ndarray,
    out_hw: tuple[int, int],
    flip: jnp.ndarray | bool = False,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The window ``[y0, y0+win_h) x [x0, x0+win_w)`` (float source pixels) resampled to ``out_hw``.

    Args:
      frame: uint8 ``[H, W, 3]``; label: uint8 ``[H, W]``; weight: float32 ``[H, W]``.
      flip: mirror the output horizontally.
    Returns:
      frame float32 ``[h, w, 3]`` in 0..255 (bilinear), label and weight ``[h, w]`` (nearest).
    """
    h, w = frame.shape[:2]
    ylo, yhi, yf, yn = _axis_coords(y0, win_h, out_hw[0], h)
    xlo, xhi, xf, xn = _axis_coords(x0, win_w, out_hw[1], w)
    xlo, xhi, xf, xn = (jnp.where(flip, a[::-1], a) for a in (xlo, xhi, xf, xn))
    f = frame.astype(jnp.float32)
    rows = f[ylo] * (1 - yf)[:, None, None] + f[yhi] * yf[:, None, None]
    img = rows[:, xlo] * (1 - xf)[None, :, None] + rows[:, xhi] * xf[None, :, None]
    return img, label[yn][:, xn], weight[yn][:, xn]


def augment_example(
    key: jax.Array, frame: jnp.ndarray, label: jnp.ndarray, weight: jnp.ndarray, aug: Augment
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """One randomly augmented example: uint8 frame ``[h, w, 3]``, label uint8 ``[h, w]``, weight float32
    ``[h, w]`` with ``(h, w) = (aug.height, aug.width)``, from a source example of any size."""
    h, w = frame.shape[:2]
    k_scale, k_y, k_x, k_flip, k_b, k_c, k_s = jax.random.split(key, 7)
    aspect = aug.width / aug.height
    full_h = min(float(h), w / aspect)
    scale = jax.random.uniform(k_scale, (), minval=aug.min_scale, maxval=aug.max_scale)
    win_h = full_h * scale
    win_w = win_h * aspect
    y0 = jax.random.uniform(k_y, ()) * (h - win_h)
    x0 = jax.random.uniform(k_x, ()) * (w - win_w)
    flip = jax.random.bernoulli(k_flip) if aug.flip else False
    img, y, wt = resample_window(frame, label, weight, y0, x0, win_h, win_w, (aug.height, aug.width), flip)

    def factor(k: jax.Array, amp: float) -> jnp.ndarray:
        return jax.random.uniform(k, (), minval=1.0 - amp, maxval=1.0 + amp)

    img = img * factor(k_b, aug.brightness)
    mean = img.mean()
    img = (img - mean) * factor(k_c, aug.contrast) + mean
    gray = img @ jnp.array([0.299, 0.587, 0.114], jnp.float32)
    img = gray[..., None] + (img - gray[..., None]) * factor(k_s, aug.saturation)
    return jnp.clip(jnp.round(img), 0, 255).astype(jnp.uint8), y, wt


# --------------------------------------------------------------------------------------------- training


def batch_loss_and_grads(
    cfg: StudentConfig, state: StudentState, frames: jnp.ndarray, labels: jnp.ndarray, weights: jnp.ndarray
) -> tuple[jnp.ndarray, Any, Any]:
    """Mean loss, its gradients and the updated BatchNorm statistics over a batch, each frame normalised
    with its own statistics (as online and in prediction).

    Args:
      frames: uint8 ``[B, H, W, 3]``; labels: int ``[B, H, W]``; weights: float32 ``[B, H, W]`` effective.
    """

    def one(params: Any, frame: jnp.ndarray, label: jnp.ndarray, weight: jnp.ndarray) -> Any:
        logits, stats = apply_model(cfg, params, state.batch_stats, frame[None], True)
        return weighted_cross_entropy(logits, label[None], weight[None], cfg.ignore_label), stats

    def loss_fn(params: Any) -> tuple[jnp.ndarray, Any]:
        losses, stats = jax.vmap(one, in_axes=(None, 0, 0, 0))(params, frames, labels, weights)
        return losses.mean(), jax.tree_util.tree_map(lambda s: s.mean(0), stats)

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return loss, grads, stats


def make_epoch(
    cfg: StudentConfig,
    aug: Augment | None,
    batch_size: int,
    fg_weight: float,
    bg_weight: float,
) -> Callable[..., tuple[StudentState, jnp.ndarray]]:
    """A jitted ``epoch(state, frames, labels, weights, key) -> (state, losses float32 [steps])``.

    One epoch = ``len(frames) // batch_size`` steps over a random permutation (``key``), scanned with
    ``lax.scan``; each example of a step is augmented with its own key (``aug`` None: used as is).
    """
    cfg.validate()

    def epoch(
        state: StudentState, frames: jnp.ndarray, labels: jnp.ndarray, weights: jnp.ndarray, key: jax.Array
    ) -> tuple[StudentState, jnp.ndarray]:
        k = frames.shape[0]
        steps = k // batch_size
        perm_key, aug_key = jax.random.split(key)
        order = jax.random.permutation(perm_key, k)[: steps * batch_size].reshape(steps, batch_size)
        step_keys = jax.random.split(aug_key, steps)

        def step(st: StudentState, xs: tuple[jnp.ndarray, jax.Array]) -> tuple[StudentState, jnp.ndarray]:
            idx, skey = xs
            f, y, w = frames[idx], labels[idx], weights[idx]
            if aug is not None:
                f, y, w = jax.vmap(lambda kk, a, b, c: augment_example(kk, a, b, c, aug))(
                    jax.random.split(skey, batch_size), f, y, w
                )
            w = jnp.where(w > 1.0, fg_weight, jnp.where(w > 0.0, bg_weight, 0.0))
            loss, grads, stats = batch_loss_and_grads(cfg, st, f, y.astype(jnp.int32), w)
            return apply_grads(cfg, st, grads, stats), loss

        return jax.lax.scan(step, state, (order, step_keys))

    return jax.jit(epoch, donate_argnums=0)


def pretrain(
    examples: Examples,
    cfg: StudentConfig,
    *,
    epochs: int,
    key: jax.Array,
    progress: bool = True,
    batch_size: int = 1,
    augment: Augment | None = None,
    fg_weight: float = OnlineConfig.fg_weight,
    bg_weight: float = OnlineConfig.bg_weight,
    state: StudentState | None = None,
    on_epoch: Callable[[int, StudentState], None] | None = None,
) -> tuple[StudentState, list[float]]:
    """A student trained on ``examples`` for ``epochs`` epochs (each one scanned, jitted call).

    Args:
      examples: frames uint8 ``[K, H, W, 3]``, labels uint8 ``[K, H, W]``, weights float ``[K, H, W]``
        (store convention, see module doc). Without ``augment`` frames are used at their own size.
      key: PRNG key (initialisation, permutations and augmentation are all split from it).
      batch_size: examples per update (``K >= batch_size``).
      augment: random windows/flips/colour jitter to ``(augment.height, augment.width)``.
      fg_weight, bg_weight: loss weight of foreground / background pixels.
      state: start from this state instead of a fresh one.
      on_epoch: called as ``on_epoch(epoch_index, state)`` after each epoch (e.g. to evaluate).
    Returns:
      ``(state, mean loss per epoch)``.
    """
    frames, labels, weights = examples
    k = len(frames)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not (len(labels) == len(weights) == k) or k == 0:
        raise ValueError(
            f"need the same positive number of frames/labels/weights, got {k}/{len(labels)}/{len(weights)}"
        )
    if not 1 <= batch_size <= k:
        raise ValueError(f"batch size must be in [1, {k}] (the number of examples), got {batch_size}")
    init_key, key = jax.random.split(key)
    out_hw = (augment.validate().height, augment.width) if augment is not None else frames.shape[1:3]
    if state is None:
        state = init_state(init_key, cfg, tuple(out_hw))
    else:
        state = jax.tree_util.tree_map(jnp.copy, state)  # the epoch donates its input state
    epoch_fn = make_epoch(cfg, augment, batch_size, fg_weight, bg_weight)
    data = (jnp.asarray(frames), jnp.asarray(labels), jnp.asarray(weights, jnp.float32))
    losses = []
    for e in range(epochs):
        t0 = time.perf_counter()
        key, sub = jax.random.split(key)
        state, step_losses = epoch_fn(state, *data, sub)
        losses.append(float(step_losses.mean()))
        if progress:
            print(
                f"pretrain: epoch {e + 1}/{epochs} loss {losses[-1]:.4f} ({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
            )
        if on_epoch is not None:
            on_epoch(e, state)
    return state, losses


def evaluate(
    cfg: StudentConfig, state: StudentState, images: np.ndarray, labels: np.ndarray, size: tuple[int, int]
) -> np.ndarray:
    """int64 confusion ``[C, C]`` (rows: label, cols: prediction) of the student over whole frames.

    Args:
      images: uint8 ``[N, H, W, 3]``; labels: uint8 ``[N, H, W]`` in the student's label space.
      size: ``(height, width)`` each frame is resampled to before prediction (labels: nearest).
    """
    c = cfg.model.num_classes
    h, w = images.shape[1:3]

    @jax.jit
    def one(params: Any, batch_stats: Any, frame: jnp.ndarray, label: jnp.ndarray) -> jnp.ndarray:
        f, y, _ = resample_window(
            frame, label, jnp.zeros(label.shape, jnp.float32), 0.0, 0.0, float(h), float(w), size
        )
        f = jnp.clip(jnp.round(f), 0, 255).astype(jnp.uint8)
        logits, _ = apply_model(cfg, params, batch_stats, f[None], cfg.model.bn_mode == "batch")
        pred = jnp.argmax(logits[0], axis=-1).astype(jnp.int32)
        return confusion_matrix(y.astype(jnp.int32), pred, c)

    total = np.zeros((c, c), np.int64)
    for i in range(len(images)):
        total += np.asarray(one(state.params, state.batch_stats, images[i], labels[i]), np.int64)
    return total
