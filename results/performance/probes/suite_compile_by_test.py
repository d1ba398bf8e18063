"""Round 7: sum the compile log of ``compile_log_plugin.py`` by test file and list the programs >= 5 s.

python results/performance/probes/suite_compile_by_test.py '/tmp/clog/log.*'
"""

import collections
import glob
import json
import sys


def main(pattern: str) -> None:
    rows = [json.loads(line) for f in glob.glob(pattern) for line in open(f)]
    rows = [r for r in rows if r["event"].endswith("backend_compile_duration")]
    print(f"{len(rows)} compiles, {sum(r['s'] for r in rows):.0f} s in the pytest workers")
    by_file: collections.Counter[str] = collections.Counter()
    big = []
    for r in rows:
        test = r["test"].split("::teardown")[0]
        by_file[test.split("::")[0]] += r["s"]
        if r["s"] >= 5:
            big.append((r["s"], test, r["fun_name"]))
    for name, secs in by_file.most_common():
        print(f"{secs:8.1f} s  {name}")
    print(f"{len(big)} programs took >= 5 s, {sum(b[0] for b in big):.0f} s in all:")
    for secs, test, fun in sorted(big, reverse=True):
        print(f"{secs:8.1f} s  {fun:18s} {test}")


if __name__ == "__main__":
    main(sys.argv[1])
