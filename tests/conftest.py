"""Shared fixtures: where the real data lives (``JITNET_DATA`` or ``../shared/data``).

The suite uses the persistent compilation cache like every command (``jitnet_jax.compile_cache``:
``JITNET_COMPILE_CACHE=off`` turns it off, a path moves it), so a second run compiles little. Within one
run (CI starts cold) it shares every program between the tests that compile it: the test modules use the
same small settings wherever the setting does not matter, so their online loops are the same programs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    from jitnet_jax.compile_cache import ENV_VAR, enable_compile_cache

    path = enable_compile_cache()
    # Subprocesses and in-process CLI runs (which enable the cache again from the environment) use the
    # same folder: a program compiled by one test is loaded, not compiled, by the others.
    os.environ[ENV_VAR] = str(path) if path is not None else "off"
    from jitnet_jax.host_memory import keep_freed_memory

    keep_freed_memory()  # as every command does (tests/test_host_memory.py checks it in a fresh process)


#: Modules that compile the most (the longest in a cold run, measured with ``--durations``), heaviest first.
#: Parallel workers (pytest-xdist, ``--dist loadfile``) take modules in collection order, so starting these
#: first keeps one long module from running alone at the end of the suite.
HEAVY_FIRST = (
    "test_sharding.py",
    "test_table.py",
    "test_multihost.py",
    "test_check.py",
    "test_replay.py",
    "test_train.py",
    "test_sweep.py",
    "test_pretrain.py",
    "test_resume.py",
    "test_live.py",
    "test_baselines.py",
    "test_online.py",
)
#: Modules whose runs are the programs other modules compile (test_table's, test_stream_cli's,
#: test_replay's): last, so that they load those programs from the cache instead of compiling them at the
#: same time in another worker.
LAST = ("test_concat.py", "test_summary.py")


#: The ``slow`` tests: whole modules, or single tests (``module::name``), that compile a large program of their
#: own or start processes (each took 3 s or more of a full run, ``--durations``; ``[id]`` names one parameter). ``pytest -m "not slow"``
#: leaves them out and still runs a test of every module of the package.
SLOW_MODULES = (
    "test_sharding.py",
    "test_multihost.py",
    "test_resume.py",
    "test_precompute_beam.py",
    "test_fleet_devices.py",
)
SLOW_TESTS = (
    "test_train.py::test_jit_equals_eager",
    "test_train.py::test_overfit_one_real_frame",
    "test_table.py::test_table_end_to_end_and_cache",
    "test_pretrain.py::test_cli_camvid_fake_folder",
    "test_pretrain.py::test_cli_leave_one_out_on_real_streams",
    "test_model.py::test_custom_conv_backward_matches_xla_gradients",
    "test_online.py::test_compiled_loop_matches_python_reference",
    "test_baselines.py::test_offline_training_fits_examples",
    "test_baselines.py::test_oracle_training_is_the_scanned_loop_of_train_steps",
    "test_stream_cli.py::test_real_lvs_stream_runs",
    "test_replay.py::test_replay_in_a_sweep_equals_separate_runs",
    "test_replay.py::test_delayed_teacher_in_a_gated_sweep",
    "test_precompute.py::test_sigkill_then_rerun_continues",
    "test_faults.py::test_sigkill_during_the_precompute",
    "test_pretrained.py::test_shipped_camvid_student_accuracy",
    "test_sweep.py::test_gating_decides_any_teacher_outside_the_vmap",
    "test_sweep.py::test_vmapped_sweep_matches_separate_runs",
    "test_compile_cache.py::test_second_process_hits_the_cache",
    "test_check.py::test_a_passing_check_runs_no_backward_pass[replay]",
    "test_check.py::test_flops_speedup_charges_what_the_program_computes[replay]",
    "test_check.py::test_decisions_equal_the_reference_loop",
    "test_concat.py::test_table_on_a_constructed_stream",
    "test_concat.py::test_stream_command_records_the_scenes",
)


@pytest.hookimpl(tryfirst=True)  # before pytest's -m deselection reads the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Markers: ``real_data`` on every test that uses the ``shared_data`` fixture, ``slow`` on
    :data:`SLOW_MODULES` and :data:`SLOW_TESTS`. Order: heavy modules first (``HEAVY_FIRST``), the rest after
    in their usual order, :data:`LAST` at the end; the order of the tests inside a module does not change."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_data)
        names = {
            f"{item.path.name}::{item.name}",
            f"{item.path.name}::{getattr(item, 'originalname', item.name)}",
        }
        if item.path.name in SLOW_MODULES or names & set(SLOW_TESTS):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    rank.update({name: len(HEAVY_FIRST) + 1 for name in LAST})
    items.sort(key=lambda item: rank.get(item.path.name, len(HEAVY_FIRST)))


def data_dir() -> Path | None:
    """The shared real-data folder, or None when it is absent."""
    env = os.environ.get("JITNET_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if (c / "lvs_mini").is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real data; skips the test with a reason when it is absent."""
    d = data_dir()
    if d is None:
        pytest.skip("real data not found: set JITNET_DATA or put shared/data beside the repo")
    return d
