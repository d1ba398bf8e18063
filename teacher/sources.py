"""Open the stream a command line asks for: the embedded synthetic stream, a label store, an LVS stream or
a video (labels precomputed on demand), or a live source whose teacher runs on request.

With ``--lvs`` the stream may be constructed from several LVS streams or segments of them
(``a[0:400]+b+a[400:]``, :mod:`jitnet_jax.data.concat`): each part's label store is made at the run's
resolution and the parts are read one after another as one stream."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from jitnet_jax.data.concat import ConcatSource, Part, is_constructed, open_concat, parse_stream_spec
from jitnet_jax.data.types import StreamSource
from jitnet_jax.run_config import RunConfig
from teacher.class_groups import ClassGroups, stream_groups


def check_lvs_spec(lvs: str | os.PathLike, spec: str) -> list[Part]:
    """The parts of a constructed stream, checked against the LVS root ``lvs`` before any label is made:
    every part names a stream folder there and all parts share class groups (``streams.json``).

    Raises:
      ValueError: a malformed spec, an unknown part or a class-group mismatch (one line).
    """
    parts = parse_stream_spec(spec)
    first: tuple[str, ClassGroups] | None = None
    for name in dict.fromkeys(n for n, _, _ in parts):
        if not (Path(lvs) / name).is_dir():
            raise ValueError(f"stream {spec}: unknown part {name} (no stream folder {Path(lvs) / name})")
        groups = stream_groups(name, lvs)
        if first is None:
            first = (name, groups)
        elif groups != first[1]:
            raise ValueError(
                f"stream {spec}: part {name} has class groups {_groups_text(groups)} but part {first[0]} has "
                f"{_groups_text(first[1])}; the parts must share class groups"
            )
    return parts


def _groups_text(groups: ClassGroups) -> str:
    """``person;car,bus,truck`` for class groups ``(("person",), ("car", "bus", "truck"))``."""
    return ";".join(",".join(g) for g in groups)


def open_lvs_spec(
    lvs: str | os.PathLike, spec: str, store_for: Callable[[str, int | None], str | os.PathLike]
) -> ConcatSource:
    """The :class:`ConcatSource` of a constructed LVS stream.

    Args:
      lvs: the LVS root.
      spec: e.g. ``residential_street1[0:400]+highway_cctv1``.
      store_for: ``(stream name, frames needed or None for all) -> label store folder`` (made on demand at
        the run's resolution, e.g. by ``teacher.precompute.ensure_store``).
    """
    from jitnet_jax.data.store_source import StoreSource

    check_lvs_spec(lvs, spec)
    return open_concat(spec, lambda name, need: StoreSource(store_for(name, need)))


def open_source(args: argparse.Namespace, cfg: RunConfig) -> StreamSource:
    """The stream source the flags ask for (label stores are precomputed on demand)."""
    if sum(x is not None for x in (args.lvs, args.store, args.video)) > 1:
        raise ValueError("give at most one of --lvs, --store, --video")
    constructed = is_constructed(args.stream)
    if constructed and not args.lvs:
        raise ValueError(f"--stream {args.stream}: a constructed stream needs --lvs DIR")
    if getattr(args, "live", False):
        if constructed:
            raise ValueError(f"--stream {args.stream}: --live takes one stream, not a constructed one")
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
            if constructed:
                return open_lvs_spec(
                    args.lvs,
                    args.stream,
                    lambda name, need: ensure_store(
                        lvs=args.lvs,
                        stream=name,
                        height=cfg.height,
                        width=cfg.width,
                        max_frames=need,
                        cache_dir=args.cache_dir,
                        progress=not args.no_progress,
                    ),
                )
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
