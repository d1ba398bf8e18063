#!/usr/bin/env bash
# For one tree ($1) and label ($2): a fresh cache; a full run (caches the program); a second run killed at
# ~frame 200; its --resume. Prints compile_s of each from summary.json / stderr.
set -u
tree=$1; label=$2
cache=$(mktemp -d); out=/tmp/rb_$label; rm -rf $out ${out}_full
cd $tree
export PYTHONPATH=$tree JITNET_COMPILE_CACHE=$cache
python -m experiments.stream --frames 400 --checkpoint-every 64 --no-progress --out ${out}_full 2>&1 | grep -E "student wall" | sed "s/^/[$label full]   /"
timeout -s KILL 30 python -m experiments.stream --frames 400 --checkpoint-every 64 --no-progress --out $out > /dev/null 2>&1
ls $out/checkpoints 2>/dev/null | tr '\n' ' ' | sed "s/^/[$label killed, checkpoints] /"; echo
python -m experiments.stream --frames 400 --checkpoint-every 64 --no-progress --out $out --resume 2>&1 | grep -E "resumed|student wall" | sed "s/^/[$label resume] /"
rm -rf $cache
