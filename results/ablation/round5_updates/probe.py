# ruff: noqa  (a measurement probe, kept as run)
"""Issue-9 probe (round 5): one online setting on one stream via the table's own machinery; scores the paper's output
and, post hoc from the same per-frame counts, the output with the teacher's label on teacher frames."""

import argparse, dataclasses, json, sys, time
from pathlib import Path
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from experiments.table import make_store
from jitnet_jax.compile_cache import enable_compile_cache
from jitnet_jax.config import ModelConfig, OnlineConfig, OptimConfig, StudentConfig
from jitnet_jax.data.store_source import StoreSource
from jitnet_jax.eval import table as T
from jitnet_jax.online.engine import init_online_state
from jitnet_jax.online.runner import run_stream
from jitnet_jax.student.metrics import iou_from_counts
from jitnet_jax.student.pretrained import resolve_init

p = argparse.ArgumentParser()
p.add_argument("stream")
p.add_argument("tag")
p.add_argument("--a", type=float, default=0.9)
p.add_argument("--dmin", type=int, default=16)
p.add_argument("--dmax", type=int, default=16)
p.add_argument("--r", type=int, default=16)
p.add_argument("--b", type=int, default=4)
p.add_argument("--umax", type=int, default=8)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--fg", type=float, default=10.0)
p.add_argument("--height", type=int, default=180)
p.add_argument("--width", type=int, default=320)
a = p.parse_args()
out = Path(__file__).parent / f"{a.tag}_{a.stream}.json"
if out.exists():
    print("exists", out)
    sys.exit(0)
enable_compile_cache(None)
student = StudentConfig(model=ModelConfig(), optim=OptimConfig(name="adam", lr=a.lr))
online = OnlineConfig(student=student, chunk_size=64, u_max=a.umax, fg_weight=a.fg).validate()
s = T.Settings(
    lvs=Path(__file__).resolve().parents[4] / "shared/data/lvs_mini",
    out=Path(__file__).resolve().parents[1].parent / "table",
    height=a.height,
    width=a.width,
    max_frames=None,
    online=online,
    fixed_updates=4,
    pretrain=False,
    pretrain_epochs=2,
    pretrain_every=8,
    pretrain_max_per_stream=60,
    oracle_epochs=20,
    oracle_every=8,
    seed=0,
    teacher_ms=325.0,
    stability_threshold=8,
    progress=False,
    camvid=resolve_init("camvid"),
    make_store=make_store,
)
src = StoreSource(T.store_dir(s, a.stream))
info = src.info
m = T.Method(
    "probe",
    "online",
    a_thr=a.a,
    start="camvid",
    optim="adam",
    lr=a.lr,
    delta_min=a.dmin,
    delta_max=a.dmax,
    replay_size=a.r,
    replay_batch=a.b,
)
cfg = T.student_config(s, len(info.class_names), m)
ocfg = T.online_config(s, m, cfg, info.fps)
w = T.camvid_student(s, cfg, info.class_names)
state = init_online_state(T.initial_state(s, cfg, w), ocfg, (s.height, s.width))
t0 = time.time()
res = run_stream(src, ocfg, state=state, progress=False)
pf = res.per_frame
tp, fp, fn = (pf[x].astype(np.int64) for x in ("tp", "fp", "fn"))
paper = iou_from_counts(tp.sum(0), fp.sum(0), fn.sum(0))
t = pf["teacher"].astype(bool)
tp2, fp2, fn2 = tp.copy(), fp.copy(), fn.copy()
tp2[t] = tp[t] + fn[t]
fp2[t] = 0
fn2[t] = 0
sub = iou_from_counts(tp2.sum(0), fp2.sum(0), fn2.sum(0))
r = {
    "args": vars(a),
    "miou": float(paper["miou"]),
    "miou_teacher_out": float(sub["miou"]),
    "teacher_fraction": float(t.mean()),
    "frames": int(len(t)),
    "updates": int(pf["updates"].sum()),
    "wall_s": time.time() - t0,
}
out.write_text(json.dumps(r, indent=1))
print(json.dumps(r))
