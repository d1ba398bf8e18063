"""Round 7: jax.profiler trace of 10 train-step calls at 180x320 (4 classes, Adam); prints the op times
per step. trace_categories_r7.py groups them (needs the compiled HLO text, see its argv)."""

import collections
import glob
import gzip
import json
import os
import time

import jax
import numpy as np

from jitnet_jax.config import ModelConfig, OptimConfig, StudentConfig
from jitnet_jax.host_memory import keep_freed_memory
from jitnet_jax.student.step import init_state, jit_train_step

keep_freed_memory()
H, W = 180, 320
cfg = StudentConfig(model=ModelConfig(num_classes=4), optim=OptimConfig("adam", lr=1e-3))
state = init_state(jax.random.key(0), cfg, (H, W))
rng = np.random.default_rng(0)
frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
label = rng.integers(0, 4, (H, W)).astype(np.int32)
weight = np.ones((H, W), np.float32)
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
d = "/tmp/trace_r7"
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
