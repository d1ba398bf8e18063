"""Many cameras, one program: a fleet of online students under one teacher budget.

``classes`` (the union head, per-camera masks and label renumbering) -> ``schedule`` (the budget, the
policies, the in-program scheduler) -> ``driver`` (the fleet on the sweep machinery, summaries) ->
``report`` (fleet.json/fleet.md/plot).
"""

from jitnet_jax.fleet.classes import RemappedSource, class_mask, label_lut, union_classes
from jitnet_jax.fleet.driver import (
    Fleet,
    FleetResult,
    camera_per_frame,
    make_fleet,
    new_fleet_state,
    run_fleet,
    split_rows,
    summarize_fleet,
)
from jitnet_jax.fleet.schedule import POLICIES, Budget, BudgetCoupling, FleetState, Ledger, init_ledger

__all__ = [
    "POLICIES",
    "Budget",
    "BudgetCoupling",
    "Fleet",
    "FleetResult",
    "FleetState",
    "Ledger",
    "RemappedSource",
    "camera_per_frame",
    "class_mask",
    "init_ledger",
    "label_lut",
    "make_fleet",
    "new_fleet_state",
    "run_fleet",
    "split_rows",
    "summarize_fleet",
    "union_classes",
]
