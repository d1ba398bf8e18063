"""The table's runs: every method on every stream, each part reused from the cache or computed (under its
lock, so parallel table processes on one output folder split the work)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from jitnet_jax.data.concat import is_constructed, parse_stream_spec, spec_slug
from jitnet_jax.data.store_source import StoreSource
from jitnet_jax.data.types import StreamSource
from jitnet_jax.eval.baselines import teacher_stability
from jitnet_jax.eval.table.cache import digest, load_cached, method_key, part_lock, part_path, write_json
from jitnet_jax.eval.table.methods import STARTS, Method
from jitnet_jax.eval.table.run import run_method
from jitnet_jax.eval.table.settings import Settings, open_stream, store_dir, student_config
from jitnet_jax.eval.table.starts import camvid_student, pretrained_student
from jitnet_jax.io import OutputBusy

#: The students' starting weights loaded so far for one stream, by start (``None``: random init).
Starts = dict[str, tuple[Any, Any] | None]


def run_table(s: Settings, streams: Sequence[str], ms: Sequence[Method]) -> dict[str, Any]:
    """Run (or reuse) every method on every stream.

    Returns:
      ``{"streams": {stream: {"class_names", "frames", "teacher_stability", "methods": {name: part}}},
      "missing": ["stream/method", ...]}`` (``missing``: parts left out by ``--collect`` or computed by
      another process right now). A constructed stream (``a[0:400]+b``) also has ``"scenes"``
      (:meth:`~jitnet_jax.data.concat.ConcatSource.scenes_json`).
    """
    results: dict[str, Any] = {}
    missing: list[str] = []
    all_streams = list(streams)
    for stream in streams:
        source = open_stream(s, stream) if is_constructed(stream) else StoreSource(store_dir(s, stream))
        info = source.info
        per: dict[str, Any] = {
            "class_names": list(info.class_names),
            "frames": info.num_frames,
            "methods": {},
        }
        if hasattr(source, "scenes_json"):
            per["scenes"] = source.scenes_json()
        tkey = {"teacher_stability": stream, "classes": list(info.class_names), **s.common_key()}
        tpath = s.out / "runs" / spec_slug(stream) / "teacher.json"
        cached = load_cached(tpath, tkey)
        if cached is None:
            cached = {
                "key": digest(tkey),
                "stability": teacher_stability(source, s.max_frames, s.stability_threshold),
            }
            write_json(tpath, cached)
        per["teacher_stability"] = cached["stability"]
        starts: Starts = {"random": None}
        for m in ms:
            key = method_key(s, m, stream, info.class_names, info.fps)
            cached = load_cached(part_path(s, stream, m.name), key)
            if cached is None and s.collect:
                missing.append(f"{stream}/{m.name}")
                continue
            if cached is None:
                cached = _locked_part(s, m, stream, source, key, starts, all_streams)
            if cached is None:
                continue
            per["methods"][m.name] = cached
        results[stream] = per
    if missing:
        print(f"--collect: {len(missing)} parts not computed yet: {' '.join(missing)}", file=sys.stderr)
    return {"streams": results, "missing": missing}


def _locked_part(
    s: Settings,
    m: Method,
    stream: str,
    source: StreamSource,
    key: dict[str, Any],
    starts: Starts,
    all_streams: Sequence[str],
) -> dict[str, Any] | None:
    """The part of ``m`` on ``stream`` (read from ``source``), computed from its start (loaded into
    ``starts`` on first use) under its lock, which is released however the run ends; it is written and
    one line printed about it. None when another table process on the same output folder holds the lock
    (it computes the part)."""
    lock = part_lock(s, stream, m.name)
    try:
        lock.acquire()
    except OutputBusy:
        print(f"{stream:>20} {m.name:<20} being computed by another process: skipped", file=sys.stderr)
        return None
    try:
        part = load_cached(part_path(s, stream, m.name), key)  # finished by another process meanwhile
        if part is not None:
            return part
        info = source.info
        cfg = student_config(s, info.num_classes, m)
        if m.student and m.start not in starts:
            if m.start == "loo":
                pool = loo_pool(stream, all_streams)
                starts["loo"] = pretrained_student(s, stream, pool, cfg, info.class_names)
            elif m.start == "camvid":
                starts["camvid"] = camvid_student(s, cfg, info.class_names)
            else:
                raise ValueError(f"unknown start {m.start!r} (choices: {', '.join(STARTS)})")
        t0 = time.perf_counter()
        part = run_method(s, m, source, cfg, starts.get(m.start))
        part.update(key=digest(key), total_s=time.perf_counter() - t0)
        write_json(part_path(s, stream, m.name), part)
    finally:
        lock.release()
    sm = part["summary"]  # one line per finished run, also without progress bars
    print(
        f"{stream:>20} {m.name:<20} mIoU {sm['miou']:.3f}  speedup {sm['speedup_cost_model']:.1f}x  "
        f"teacher {100 * sm['teacher_fraction']:.1f}%  ({part['total_s']:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return part


def _stream_names(stream: str) -> list[str]:
    """The plain streams ``stream`` reads: itself, or a constructed stream's part names in order."""
    if not is_constructed(stream):
        return [stream]
    return list(dict.fromkeys(n for n, _, _ in parse_stream_spec(stream)))


def loo_pool(stream: str, all_streams: Sequence[str]) -> list[str]:
    """``[stream, *others]`` for the leave-one-out start of ``stream``: the others are the plain streams
    the table reads (constructed streams give their parts, in order, each once) except those ``stream``
    reads, so a student never pretrains on frames of a stream it is then scored on. For a table of plain
    streams this is ``all_streams`` with ``stream`` first."""
    own = set(_stream_names(stream))
    others = [n for st in all_streams for n in _stream_names(st) if n not in own]
    return [stream, *dict.fromkeys(others)]
