"""Many members over the engine's step: vmapped/mapped hyperparameter sweeps.

``grid`` (members, grids, Pareto front) -> ``members`` (traced settings, stacked states) -> ``compiled``
(the engine's ``frame_step`` vmapped/gated/mapped over members) -> ``memory`` (estimate, refusal) ->
``driver`` (host loop, summaries).
"""

from jitnet_jax.sweep.compiled import MODES, make_sweep_chunk, sweep_chunk, sweep_frame_step
from jitnet_jax.sweep.driver import SweepResult, run_sweep, stream_miou, summarize_sweep
from jitnet_jax.sweep.grid import SWEEP_FIELDS, Member, make_grid, pareto_front, parse_grid
from jitnet_jax.sweep.members import (
    MemberParams,
    check_members,
    init_sweep_state,
    member_params,
    member_state,
)
from jitnet_jax.sweep.memory import MemoryEstimate, available_memory, check_memory, estimate_memory

__all__ = [
    "MODES",
    "SWEEP_FIELDS",
    "Member",
    "MemberParams",
    "MemoryEstimate",
    "SweepResult",
    "available_memory",
    "check_members",
    "check_memory",
    "estimate_memory",
    "init_sweep_state",
    "make_grid",
    "make_sweep_chunk",
    "member_params",
    "member_state",
    "pareto_front",
    "parse_grid",
    "run_sweep",
    "stream_miou",
    "summarize_sweep",
    "sweep_chunk",
    "sweep_frame_step",
]
