"""Open the stream a command line asks for: the embedded synthetic stream, a label store, an LVS stream or
a video (labels precomputed on demand), or a live source whose teacher runs on request."""

from __future__ import annotations

import argparse

from jitnet_jax.data.types import StreamSource
from jitnet_jax.run_config import RunConfig


def open_source(args: argparse.Namespace, cfg: RunConfig) -> StreamSource:
    """The stream source the flags ask for (label stores are precomputed on demand)."""
    if sum(x is not None for x in (args.lvs, args.store, args.video)) > 1:
        raise ValueError("give at most one of --lvs, --store, --video")
    if getattr(args, "live", False):
        from teacher.live import open_live

        return open_live(
            teacher=args.teacher,
            video=args.video,
            lvs=args.lvs,
            stream=None if args.stream == "synthetic" else args.stream,
            model=args.model,
            groups=args.groups,
            height=cfg.height,
            width=cfg.width,
        )
    if args.store:
        from jitnet_jax.data.store_source import StoreSource

        return StoreSource(args.store)
    if args.lvs or args.video:
        from jitnet_jax.data.store_source import StoreSource
        from teacher.precompute import ensure_store

        if args.lvs:
            if args.stream == "synthetic":
                raise ValueError("--lvs needs --stream NAME (e.g. residential_street1)")
            store = ensure_store(
                lvs=args.lvs,
                stream=args.stream,
                height=cfg.height,
                width=cfg.width,
                cache_dir=args.cache_dir,
                progress=not args.no_progress,
            )
        else:
            if not args.teacher:
                raise ValueError("--video needs --teacher yolov8_seg|deeplab")
            stream = None if args.stream == "synthetic" else args.stream
            store = ensure_store(
                video=args.video,
                teacher=args.teacher,
                model=args.model,
                stream=stream,
                groups=args.groups,
                height=cfg.height,
                width=cfg.width,
                cache_dir=args.cache_dir,
                progress=not args.no_progress,
            )
        return StoreSource(store)
    if args.stream != "synthetic":
        raise ValueError(f"--stream {args.stream}: a named stream needs --lvs DIR (or use --store/--video)")
    from jitnet_jax.data.synthetic import SyntheticStream

    return SyntheticStream(num_frames=cfg.frames or 1500, height=cfg.height, width=cfg.width, seed=cfg.seed)
