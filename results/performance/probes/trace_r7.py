"""Round 7: jax.profiler trace of 10 train-step calls at H x W (argv, default 180 320; 4 classes, Adam); prints the op times
per step. trace_categories_r7.py groups them (needs the compiled HLO text, see its argv)."""

import collections
import glob
import gzip
import json
import os
import sys
import time
from pathlib import Path

import jax

from jitnet_jax.host_memory import keep_freed_memory

sys.path.insert(0, str(Path(__file__).parent))
from _setup_r7 import setup  # noqa: E402

from jitnet_jax.student.step import jit_train_step, train_step

keep_freed_memory()
H, W = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (180, 320)
cfg, state, frame, label, weight = setup(H, W)
step = jit_train_step(cfg)
s = step(state, frame, label, weight)[0]
for _ in range(5):
    s = step(s, frame, label, weight)[0]
jax.block_until_ready(s)
t = time.perf_counter()
for _ in range(10):
    s = step(s, frame, label, weight)[0]
jax.block_until_ready(s)
print("ms/step", (time.perf_counter() - t) * 100)
d = f"/tmp/trace_r7_{H}x{W}"
os.system(f"rm -rf {d}")
with jax.profiler.trace(d, create_perfetto_trace=True):
    for _ in range(10):
        s = step(s, frame, label, weight)[0]
    jax.block_until_ready(s)
f = glob.glob(d + "/**/*.trace.json.gz", recursive=True)[0]
ev = json.load(gzip.open(f))["traceEvents"]
tot = collections.Counter()
cnt = collections.Counter()
tids = collections.Counter()
for e in ev:
    if e.get("ph") == "X":
        tot[e["name"]] += e.get("dur", 0)
        cnt[e["name"]] += 1
        tids[e.get("tid")] += e.get("dur", 0)
print(len(ev), "events")
for k, v in tot.most_common(60):
    print(f"{v / 10 / 1000:8.2f} ms/step  n={cnt[k] // 10:4d}  {k[:110]}")

# the compiled program's HLO text (the same fusion names as the traced one) for trace_categories_r7.py
hlo = jax.jit(lambda s, f, y, w: train_step(cfg, s, f, y, w), donate_argnums=0).lower(s, frame, label, weight)
open(f"{d}/step_hlo.txt", "w").write(hlo.compile().as_text())
print(f"python {Path(__file__).parent}/trace_categories_r7.py {d} {d}/step_hlo.txt 10")
