"""Round 7, a pytest plugin: per test, the XLA compile seconds of every program the test's process compiles.

    PYTHONPATH=results/performance/probes COMPILE_LOG=/tmp/clog/log JITNET_COMPILE_CACHE=$(mktemp -d) \
        python -m pytest -q -p no:cacheprovider -p compile_log_plugin tests

Each worker appends JSON lines to ``$COMPILE_LOG.<pid>`` (JAX's ``backend_compile_duration`` events);
subprocesses that tests start (sharding, kill/resume) are not seen. ``suite_compile_by_test.py`` sums them.
"""

import json
import os

import jax

_current = {"id": "(collection)"}
_out = open(os.environ["COMPILE_LOG"] + f".{os.getpid()}", "a")


def _listener(event, duration, **kw):
    if "backend_compile" in event or "compile_time" in event:
        _out.write(
            json.dumps(
                {"test": _current["id"], "event": event, "s": duration, **{k: str(v) for k, v in kw.items()}}
            )
            + "\n"
        )
        _out.flush()


jax.monitoring.register_event_duration_secs_listener(_listener)


def pytest_runtest_setup(item):
    _current["id"] = item.nodeid


def pytest_runtest_teardown(item):
    _current["id"] = item.nodeid + "::teardown"
