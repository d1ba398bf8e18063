"""The paper's per-stream table: every method on every stream, one command.

    python -m experiments.table --lvs ../shared/data/lvs_mini --out results/table [--streams ...]
        [--height 180 --width 320 --max-frames N] [--methods ...] [--collect]

A stream may be constructed from others or segments of them (``--streams a+b+c 'a[0:400]+b'``,
docs/scenes.md): it is named by its canonical spec, and ``table.json`` lists its scenes.

Flags and stream discovery only; the methods, the cached and locked parts, and the table files are
described and implemented in :mod:`jitnet_jax.eval.table` (protocol: ``docs/evaluation.md``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jitnet_jax.compile_cache import enable_compile_cache
from jitnet_jax.config import ModelConfig, OnlineConfig, OptimConfig, StudentConfig, override
from jitnet_jax.data.concat import canonical_spec, is_constructed
from jitnet_jax.data.label_store import FORMAT_VERSION as STORE_FORMAT_VERSION
from jitnet_jax.eval.table import (
    MEASURED_TEACHER_MS,
    Settings,
    methods,
    online_key,
    run_table,
    write_outputs,
)
from jitnet_jax.host_memory import keep_freed_memory


def make_store(s: Settings, stream: str) -> Path:
    """The stream's label store at the table's resolution (``s.max_frames`` frames at most), made by the
    teacher stage on first use."""
    from teacher.precompute import ensure_store

    return ensure_store(
        lvs=s.lvs,
        stream=stream,
        height=s.height,
        width=s.width,
        max_frames=s.max_frames,
        cache_dir=s.out / "stores" / f"v{STORE_FORMAT_VERSION}",
        progress=s.progress,
    )


def check_stream(lvs: Path, stream: str) -> str:
    """``stream`` as the table names it: a plain stream whose folder is in ``lvs``, or a constructed
    stream's canonical spec after its parts are checked (``teacher.sources.check_lvs_spec``).

    Raises:
      ValueError: a missing stream folder, or a bad constructed stream (one line).
    """
    if is_constructed(stream):
        from teacher.sources import check_lvs_spec

        return canonical_spec(check_lvs_spec(lvs, stream))
    if not (lvs / stream).is_dir():
        raise ValueError(f"{lvs / stream}: stream folder not found")
    return stream


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.table", description=__doc__.split("\n\n")[0])
    p.add_argument("--lvs", type=Path, required=True, help="LVS root (e.g. ../shared/data/lvs_mini)")
    p.add_argument(
        "--streams",
        nargs="*",
        help="streams, or constructed streams such as 'a[0:400]+b' (default: every stream in streams.json)",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory (results are cached here)")
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--max-frames", type=int, help="only the first N frames of each stream")
    p.add_argument("--methods", nargs="*", help="subset of method names (default: all)")
    p.add_argument(
        "--optim", choices=["adam", "sgd"], default="adam", help="student optimiser (online and offline)"
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width-multiplier", type=float, default=ModelConfig.width_multiplier)
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--fixed-updates", type=int, default=4, help="updates per teacher frame of fixed stride")
    p.add_argument("--no-pretrain", action="store_true", help="start every student from random init")
    p.add_argument(
        "--camvid-init",
        default="camvid",
        help="the CamVid-pretrained student for the cv_* and *_cv columns: a checkpoint directory or a "
        "shipped name (default: camvid, the student shipped with the package; 'none': leave them out)",
    )
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--pretrain-every", type=int, default=8)
    p.add_argument("--pretrain-max-per-stream", type=int, default=60)
    p.add_argument("--oracle-epochs", type=int, default=20)
    p.add_argument("--oracle-every", type=int, default=8)
    p.add_argument(
        "--teacher-ms", type=float, default=MEASURED_TEACHER_MS, help="measured teacher ms per frame"
    )
    p.add_argument("--stability-threshold", type=int, default=8, help="static pixel: max |dRGB| <= this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="OnlineConfig overrides")
    p.add_argument(
        "--jax-cache",
        help="persistent XLA compilation cache folder or 'off' (default: $JITNET_COMPILE_CACHE, else "
        "~/.cache/jitnet_jax/xla)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--collect",
        action="store_true",
        help="compute nothing: write the table from the parts already cached (missing cells stay empty)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; 0 on success, 2 on bad arguments/input."""
    args = build_parser().parse_args(argv)
    try:
        from teacher.class_groups import load_streams_json
        from teacher.flow import have_opencv, run_flow_propagation

        args.out.mkdir(parents=True, exist_ok=True)
        enable_compile_cache(args.jax_cache)
        keep_freed_memory()
        streams = args.streams or sorted(load_streams_json(args.lvs / "streams.json"))
        streams = [check_stream(args.lvs, st) for st in streams]
        student = StudentConfig(
            model=ModelConfig(width_multiplier=args.width_multiplier),
            optim=OptimConfig(name=args.optim, lr=args.lr),
        )
        online = override(
            OnlineConfig(student=student, chunk_size=args.chunk_size), list(args.set)
        ).validate()
        camvid = None
        if args.camvid_init != "none":
            from jitnet_jax.student.pretrained import resolve_init

            camvid = resolve_init(args.camvid_init)
            if not camvid.is_dir():
                if args.camvid_init != "camvid":
                    raise ValueError(f"{camvid}: --camvid-init checkpoint not found")
                camvid = None  # the shipped student is not there (yet): leave the CamVid columns out
        s = Settings(
            lvs=args.lvs,
            out=args.out,
            height=args.height,
            width=args.width,
            max_frames=args.max_frames,
            online=online,
            fixed_updates=args.fixed_updates,
            pretrain=not args.no_pretrain,
            pretrain_epochs=args.pretrain_epochs,
            pretrain_every=args.pretrain_every,
            pretrain_max_per_stream=args.pretrain_max_per_stream,
            oracle_epochs=args.oracle_epochs,
            oracle_every=args.oracle_every,
            seed=args.seed,
            teacher_ms=args.teacher_ms,
            stability_threshold=args.stability_threshold,
            progress=not args.no_progress,
            camvid=camvid,
            collect=args.collect,
            make_store=make_store,
            run_flow=run_flow_propagation if have_opencv() else None,
        )
        ms = methods(s.pretrain, have_opencv(), camvid is not None)
        if args.methods:
            unknown = sorted(set(args.methods) - {m.name for m in ms})
            if unknown:
                raise ValueError(f"unknown --methods {unknown}; choices: {[m.name for m in ms]}")
            ms = [m for m in ms if m.name in args.methods]
        results = run_table(s, streams, ms)
        settings_json = {
            **s.common_key(),
            "streams": streams,
            "lvs": str(args.lvs),
            "fixed_updates": s.fixed_updates,
            "pretrain": s.pretrain,
            "teacher_ms": s.teacher_ms,
            "camvid_init": str(camvid) if camvid else None,
            "online": online_key(s.online),
            "oracle": [s.oracle_epochs, s.oracle_every],
            "pretrain_loo": [s.pretrain_epochs, s.pretrain_every, s.pretrain_max_per_stream],
            "argv": list(argv or sys.argv[1:]),
        }
        write_outputs(s, results, ms, settings_json)
    except (ValueError, OSError) as e:
        print(f"error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        return 2
    print(args.out / "table.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
