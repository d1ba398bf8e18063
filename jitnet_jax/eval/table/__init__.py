"""The paper's per-stream table as a library: every method on every stream, cached parts, the table files.

``python -m experiments.table`` is its entry point. This package never imports the teacher stage: the entry
point passes in how a stream's label store is made (``Settings.make_store``) and the flow-propagation
baseline (``Settings.run_flow``).

Modules, each importing only those above it:
  * :mod:`~jitnet_jax.eval.table.methods`: the catalogue of columns (:class:`Method`, :func:`methods`);
  * :mod:`~jitnet_jax.eval.table.settings`: :class:`Settings` and the configs a method runs with;
  * :mod:`~jitnet_jax.eval.table.cache`: cache keys, parts on disk and their locks;
  * :mod:`~jitnet_jax.eval.table.starts`: the students' starting weights;
  * :mod:`~jitnet_jax.eval.table.run`: one method on one stream (:func:`run_method`);
  * :mod:`~jitnet_jax.eval.table.build`: every method on every stream (:func:`run_table`);
  * :mod:`~jitnet_jax.eval.table.overall`, :mod:`~jitnet_jax.eval.table.claims`: the Overall row, the
    paper's claims;
  * :mod:`~jitnet_jax.eval.table.report`, :mod:`~jitnet_jax.eval.table.plot`: the table's files.

Methods (columns; ``--methods`` picks a subset):
  * ``online_a{0.7,0.8,0.9}``: online distillation (Algorithm 1) from the leave-one-stream-out pretrained
    student (``--no-pretrain``: from random init); ``online_a0.8_random``: from random init;
  * ``cv_sgd_a*`` / ``cv_adam_a*``: online from the CamVid-pretrained student (``--camvid-init``, default the
    shipped ``camvid``; head mapped to the stream's classes by name) with the paper's SGD 0.01 / Adam 1e-3;
    ``cv_adam_a*_r16b4``: with replay of the last 16 teacher frames, 4 frames per update;
  * ``fixed_d{8,16}``: teacher every delta frames, exactly ``--fixed-updates`` updates per teacher frame;
  * ``no_adapt`` / ``no_adapt_cv``: the pretrained / CamVid student on every frame, no teacher, no updates;
  * ``oracle`` / ``oracle_cv``: trained offline on every 8th teacher frame of the same stream (from random
    init / the CamVid start), then no updates; ``oracle_w0.5``: the oracle at half the student's width;
  * ``hold_d{8,16}``: the teacher label every delta frames, held until the next one (zero student cost);
  * ``flow_d{8,16}``: the teacher label warped forward with Farneback flow (only with OpenCV).

Cells are "mIoU (speedup x, teacher %)": stream-level foreground mIoU against the teacher's labels on all
frames, the cost-model speedup over running the teacher on every frame (paper costs: teacher 300 ms,
student inference 7 ms, update 30 ms; 0 student cost for label hold, the measured flow time for flow) and
the fraction of frames the teacher ran on. With measured costs (:mod:`jitnet_jax.eval.measured_costs`,
``OUT/costs.json``: teacher, student predict, update of B frames and flow timed on this machine) each cell
also holds the speedup under them ("mIoU (paper x / measured x, teacher %)") and the claims read the
accuracy-speedup front under both models. ``table.json`` also holds the measured speedup (this CPU's
wall time of the method against ``--teacher-ms`` per teacher frame), class IoUs, updates and the
temporal stability (flip rate on static pixels, ``jitnet_jax.eval.baselines``) of the teacher and every method.

Overall row: mIoU and flip rate are unweighted means over streams; speedup and teacher % are computed from
frame / teacher-frame / update totals over all streams.

Every (method, stream) result is one part, cached as JSON under ``OUT/runs/<stream>/<method>.json`` together
with a key of everything that determines it; a rerun reuses matching parts (and leave-one-out checkpoints
under ``OUT/pretrained/``), so an interrupted run resumes where it stopped. Several table processes may share
one ``OUT`` (e.g. one per ``--streams``/``--methods`` subset): a part being computed is locked and skipped by
the others. ``--collect`` computes nothing and writes the table from the cached parts.
"""

from __future__ import annotations

from jitnet_jax.eval.table.build import run_table
from jitnet_jax.eval.table.cache import (
    NEUTRAL_ONLINE,
    digest,
    load_cached,
    method_key,
    online_key,
    part_lock,
    part_path,
    write_json,
)
from jitnet_jax.eval.table.claims import claims, claims_markdown
from jitnet_jax.eval.table.methods import (
    ADAM,
    CAMVID_THRESHOLDS,
    DMAX_SHORT,
    MEASURED_TEACHER_MS,
    ONLINE_THRESHOLDS,
    ORACLE_WIDTH_SCALES,
    PAPER_SGD,
    REPLAY,
    STARTS,
    STRIDES,
    TEACHER_LATENCY_MS,
    U_LONG,
    Method,
    methods,
)
from jitnet_jax.eval.table.overall import overall
from jitnet_jax.eval.table.plot import plot
from jitnet_jax.eval.table.report import cell, markdown, stability_rows, table_rows, write_outputs
from jitnet_jax.eval.table.run import PREFIXES, prefix_scores, run_method
from jitnet_jax.eval.table.settings import Settings, online_config, store_dir, student_config
from jitnet_jax.eval.table.starts import camvid_student, initial_state, pretrained_student

__all__ = [
    "ADAM",
    "CAMVID_THRESHOLDS",
    "DMAX_SHORT",
    "MEASURED_TEACHER_MS",
    "NEUTRAL_ONLINE",
    "ONLINE_THRESHOLDS",
    "ORACLE_WIDTH_SCALES",
    "PAPER_SGD",
    "PREFIXES",
    "REPLAY",
    "STARTS",
    "STRIDES",
    "TEACHER_LATENCY_MS",
    "U_LONG",
    "Method",
    "Settings",
    "camvid_student",
    "cell",
    "claims",
    "claims_markdown",
    "digest",
    "initial_state",
    "load_cached",
    "markdown",
    "method_key",
    "methods",
    "online_config",
    "online_key",
    "overall",
    "part_lock",
    "part_path",
    "plot",
    "prefix_scores",
    "pretrained_student",
    "run_method",
    "run_table",
    "stability_rows",
    "store_dir",
    "student_config",
    "table_rows",
    "write_json",
    "write_outputs",
]
