"""Suite-wide fixtures."""

import asyncio
import fcntl
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_asyncio import is_async_test

from tests.brokers import any_broker, mosquitto  # noqa: F401  (fixtures for every test)
from tests.hil.options import add_hil_options

_REAL_TIME = (
    "tests/faults/", "tests/test_day_", "tests/test_end_to_end.py",
    "tests/test_settlement_community.py", "tests/test_network_gateways.py",
    "tests/gateway/test_ev_night.py",
    "tests/market/test_feeder_100.py",
    "tests/market/test_flood.py",
)
"""Whole communities on a scaled clock, marked ``realtime``: their deadlines are real
milliseconds, so two of them must never compete for the same cores. With ``-n 2 --dist
loadgroup`` they all run on one worker (``xdist_group``), and a lock file lets only one run at a
time on the machine, whatever runs them (another worker, another pytest on the same host);
``-m realtime`` / ``-m "not realtime"`` run them apart from the rest of the suite."""
_REAL_TIME_LOCK = Path(tempfile.gettempdir()) / "gridpeer-realtime.lock"
_REAL_TIME_WAIT_S = 3600.0
"""How long a real-time test waits for another to finish before it fails (a day test and its
baseline take a few minutes; an hour means the holder is stuck)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "realtime: a whole community on a scaled clock; one runs at a time per machine")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(_REAL_TIME):
            item.add_marker(pytest.mark.realtime)
            item.add_marker(pytest.mark.xdist_group("real-time"))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """A real-time test holds the machine's real-time lock from its setup (a module's shared day
    is made in its first test's setup) to its teardown."""
    if item.get_closest_marker("realtime") is None:
        yield
        return
    with _REAL_TIME_LOCK.open("a") as lock:
        held = _lock(lock.fileno())
        if not held:
            item.warn(pytest.PytestWarning(
                f"ran without the real-time lock: another test held {_REAL_TIME_LOCK} for "
                f"{_REAL_TIME_WAIT_S:.0f} s"))
        try:
            yield
        finally:
            if held:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _lock(fd: int) -> bool:
    deadline = time.monotonic() + _REAL_TIME_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--hil-modbus`` / ``--hil-serial``: run tests/hil against a real device."""
    add_hil_options(parser)


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Fail a test that leaves threads running: a leaked poller or client thread hides a bug.

    Same idea as pymodbus's own suite fixture (its ``_check_system_health``); asyncio tasks are
    :func:`no_leaked_tasks`.
    """
    before = set(threading.enumerate())
    yield
    leaked = [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.daemon
    ]
    for t in leaked:
        t.join(timeout=2.0)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"test leaked threads: {still}"


_TASK_GRACE_STEPS = 3
"""Loop iterations a task cancelled in teardown (but not awaited) gets to finish before it counts
as leaked."""


@pytest.fixture(autouse=True)
def no_leaked_tasks(request: pytest.FixtureRequest, no_leaked_threads: None) -> Iterator[None]:
    """Fail an async test that leaves asyncio tasks running once it and its fixtures are done.

    pytest-asyncio's runner cancels whatever is left when it closes the test's loop, silently, so
    a task the code under test forgot (a watcher nobody stops, a reader outliving its link) would
    never show. This fixture sets up before the test's own fixtures (it is autouse), so its
    teardown runs after theirs and before the loop closes: what is still pending then leaked.
    Only tests on their own (function-scoped) loop are checked; a module's shared loop outlives
    its tests by design. It depends on :func:`no_leaked_threads` so that check runs after the
    loop is closed (and its default executor's threads are stopped).
    """
    marker = request.node.get_closest_marker("asyncio")
    scope = (marker.kwargs.get("loop_scope") if marker else None) or "function"
    if not is_async_test(request.node) or scope != "function":
        yield
        return
    loop = request.getfixturevalue("_function_scoped_runner").get_loop()
    yield
    for _ in range(_TASK_GRACE_STEPS):
        if not any(not t.done() for t in asyncio.all_tasks(loop)):
            break
        loop.run_until_complete(asyncio.sleep(0))
    leaked = sorted(t.get_name() + " " + repr(t.get_coro()) for t in asyncio.all_tasks(loop)
                    if not t.done())
    assert not leaked, f"test left asyncio tasks running: {leaked}"
