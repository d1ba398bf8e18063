# ruff: noqa  (a measurement probe for docs/performance.md, kept as run)
import time

import jax

from jitnet_jax.compile_cache import enable_compile_cache

enable_compile_cache("/tmp/perf/cc_stream")
from jitnet_jax.config import *
from jitnet_jax.online.engine import Knobs, OnlineConfig, make_run_chunk
from jitnet_jax.online.runner import chunk_abstract, new_state

cfg = OnlineConfig()
st = jax.eval_shape(lambda: new_state(cfg, jax.random.key(0), (180, 320)))
w0, c0 = time.perf_counter(), time.process_time()
lo = make_run_chunk(cfg, False).lower(Knobs.from_config(cfg), st, *chunk_abstract(cfg.chunk_size, 180, 320))
w1, c1 = time.perf_counter(), time.process_time()
lo.compile()
w2, c2 = time.perf_counter(), time.process_time()
print("lower wall %.1f cpu %.1f | compile wall %.1f cpu %.1f" % (w1 - w0, c1 - c0, w2 - w1, c2 - c1))
