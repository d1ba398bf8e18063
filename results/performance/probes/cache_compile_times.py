"""Round 7: how long the programs in a persistent compilation cache took to compile, grouped by name.

    python results/performance/probes/cache_compile_times.py CACHE_DIR

JAX stores each entry's compile time in whole seconds (truncated) in front of the executable
(``jax._src.compilation_cache``); entries under a second count as 0. Run on the folder a cold test-suite run
filled, it shows where the suite's compile time goes.
"""

import collections
import re
import sys
from pathlib import Path

from jax._src import compilation_cache as cc


def main(folder: str) -> None:
    seconds: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    for entry in Path(folder).iterdir():
        if not entry.is_file():
            continue
        _, secs = cc.extract_executable_and_time(cc.decompress_executable(entry.read_bytes()))
        name = re.sub(r"-[0-9a-f]{64}-cache$", "", entry.name)
        seconds[name] += secs
        count[name] += 1
    timed = sum(1 for name in count if seconds[name])
    print(f"{sum(count.values())} entries, {sum(seconds.values())} s of compile in whole seconds")
    print(f"{'seconds':>8} {'programs':>8}  name   ({timed} names with >= 1 s)")
    for name, secs in seconds.most_common(12):
        print(f"{secs:>8} {count[name]:>8}  {name}")


if __name__ == "__main__":
    main(sys.argv[1])
