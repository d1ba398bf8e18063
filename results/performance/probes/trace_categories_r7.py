"""Round 7: group a trace_r7.py trace by op kind. argv: trace folder, HLO text file, steps traced."""

import collections
import glob
import gzip
import json
import re
import sys

d = sys.argv[1]
hlo = open(sys.argv[2]).read()
steps = int(sys.argv[3])
f = glob.glob(d + "/**/*.trace.json.gz", recursive=True)[0]
ev = json.load(gzip.open(f))["traceEvents"]
info = {}
for m in re.finditer(r"%([\w.\-]+) = (\S+) (\w[\w-]*)\((.*)$", hlo, re.M):
    name, shape, op, rest = m.groups()
    on = re.search(r'op_name="([^"]+)"', rest)
    info[name] = (shape, op, on.group(1) if on else "")
tot = collections.Counter()
for e in ev:
    if e.get("ph") == "X" and e["name"] in info:
        tot[e["name"]] += e.get("dur", 0)
cats = collections.Counter()
for n, t in tot.items():
    shape, op, on = info[n]
    if "conv_general_dilated" in on:
        if "transpose(" in on:
            c = (
                "conv kernel grad"
                if re.match(r"f32\[\d+,\d+,\d+,\d+\]", shape) and not shape.startswith("f32[1,")
                else "conv input grad"
            )
        else:
            c = "conv forward"
    elif "dot_general" in n or "dot_general" in on:
        c = "dot (per-tap dk)"
    elif "BatchNorm" in on:
        c = "batchnorm"
    elif "resize" in on or "gather" in n:
        c = "resize"
    elif "adam" in on or "optax" in on or "scale_by" in on:
        c = "optimizer"
    else:
        c = "other:" + (on.split("/")[-1] if on else n.split(".")[0])
    cats[c] += t
all_ = sum(cats.values())
for c, t in cats.most_common(40):
    print(f"{t / steps / 1000:8.2f} ms  {100 * t / all_:5.1f}%  {c}")
print(f"{all_ / steps / 1000:8.2f} ms total in ops")
