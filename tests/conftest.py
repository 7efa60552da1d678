"""Suite-wide fixtures."""

import asyncio
import contextlib
import fcntl
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import IO

import pytest
from hypothesis import HealthCheck, settings
from pytest_asyncio import is_async_test

from tests.brokers import any_broker, mosquitto  # noqa: F401  (fixtures for every test)
from tests.hil.options import add_hil_options

_REAL_TIME_SLOTS = tuple(Path(tempfile.gettempdir()) / f"gridpeer-realtime-{n}.lock"
                         for n in (0, 1))
"""Whole communities on a scaled clock, marked ``realtime`` (``pytestmark`` in their files):
their deadlines are real milliseconds, so they must never be starved of a core. One that runs in
a single process uses at most one core, so two of them may run at once on a two-core machine;
one that starts processes of its own (a gateway child, the no-market baseline) is marked
``realtime(cores=2)`` and runs with no other real-time test. Two slot files do it, machine-wide
(another pytest on the same host counts too): a one-core test holds either, a two-core test
both. ``-m realtime`` / ``-m "not realtime"`` run them apart from the rest of the suite."""
_REAL_TIME_QUEUE = Path(tempfile.gettempdir()) / "gridpeer-realtime-queue.lock"
_REAL_TIME_WAIT_S = 3600.0
"""How long a real-time test waits for its slots before it runs without them (a day test and its
baseline take a few minutes; an hour means a holder is stuck)."""
_LANES = 2
"""Real-time modules are dealt to this many xdist groups (``--dist loadgroup``), one module whole
in one lane: a lane is one worker running its real-time modules one after the other, so at most
two of them wait on the clock at once (the two slots) and no worker sits blocked on a slot while
CPU-bound tests queue. The other workers take the rest of the suite; ``-n 4`` on two cores gives
two lanes and two workers for the rest. A module's shared day is made once, in its lane."""
_DEFAULT_COST_S = 30
"""Wall seconds a real-time module is reckoned to take when its marker does not say
(``realtime(cost_s=...)``): only used to balance the lanes."""
_BACKGROUND_NICE = 10
"""Niceness of CPU-bound tests while real-time ones run beside them: the scheduler then gives a
real-time test the core it asks for (weight 1024 against 110) within a millisecond, instead of
sharing it evenly with a hypothesis search. Raising one's own niceness needs no privilege;
lowering it back for a real-time test on the same worker does (CI runs as root; elsewhere the
test keeps the worker's niceness, as every test did before)."""

settings.register_profile(
    "gridpeer", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("gridpeer")
"""No property test depends on how fast the machine is: hypothesis's per-example deadline and
its too-slow health check time examples on the wall clock, which a loaded CI host stretches."""


def pytest_configure(config: pytest.Config) -> None:
    if (config.getoption("dist", "no") == "loadgroup" and pytest.version_tuple >= (9, 2)
            and tuple(int(n) for n in version("pytest-xdist").split(".")[:2]) <= (3, 8)):
        raise pytest.UsageError(
            f"pytest {pytest.__version__} with pytest-xdist {version('pytest-xdist')} ignores "
            "--dist loadgroup's groups (pytest-dev/pytest-xdist#1386), so the real-time lanes "
            "would not hold: pip install -e '.[test]' installs the pinned pytest")
    if config.getoption("dist", "no") == "loadgroup":
        # work units in collection order, where the lanes come first (see the hook below);
        # xdist's default hands out the units with the most tests first, and the lanes waited
        # behind every module with more tests than they have
        config.option.loadscopereorder = False
    config.addinivalue_line(
        "markers", "realtime(cores=1, cost_s=30): a whole community on a scaled clock; it runs "
        "only while it has ``cores`` of the machine's two real-time slots, in one of two lanes "
        "balanced by ``cost_s`` (its module's wall seconds, roughly)")


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
        config: pytest.Config, items: list[pytest.Item]) -> Iterator[None]:
    """Deal real-time modules to ``_LANES`` xdist groups, heaviest first to the lightest lane.
    A wrapper, so it runs before xdist's own hook reads the groups (``tryfirst`` is not enough: a
    conftest's hooks are registered after xdist's worker plugin). A module that needs both cores
    holds up every lane while it runs, so its cost counts in each. The lanes' tests move to the
    front of the collection, so the lanes are the first work units handed out: they are the
    longest path through the suite."""
    costs: dict[str, tuple[int, int]] = {}
    for item in items:
        marker = item.get_closest_marker("realtime")
        if marker is not None:
            costs[item.nodeid.split("::")[0]] = (int(marker.kwargs.get("cost_s", _DEFAULT_COST_S)),
                                                 int(marker.kwargs.get("cores", 1)))
    loads = [0] * _LANES
    lane: dict[str, int] = {}
    for module, (cost, cores) in sorted(costs.items(), key=lambda mc: (-mc[1][0], mc[0])):
        lane[module] = loads.index(min(loads))
        for n in range(_LANES) if cores > 1 else (lane[module],):  # it holds every slot
            loads[n] += cost
    for item in items:
        module = item.nodeid.split("::")[0]
        if module in lane:
            item.add_marker(pytest.mark.xdist_group(f"realtime-{lane[module]}"))
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in lane)  # stable
    return (yield)


def _renice(value: int) -> None:
    """Set this thread's niceness (and so its children's) to ``value`` if the OS lets it."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, value)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """A real-time test holds its slots from its setup (a module's shared day is made in its
    first test's setup) to its teardown."""
    marker = item.get_closest_marker("realtime")
    if marker is None:
        _renice(max(_BACKGROUND_NICE, os.getpriority(os.PRIO_PROCESS, 0)))
        yield
        return
    _renice(0)
    cores = int(marker.kwargs.get("cores", 1))
    with contextlib.ExitStack() as stack:
        queue = stack.enter_context(_REAL_TIME_QUEUE.open("a"))
        slots = [stack.enter_context(path.open("a")) for path in _REAL_TIME_SLOTS]
        held = _take(queue, slots, cores)
        if held is None:
            item.warn(pytest.PytestWarning(
                f"ran without its real-time slots: other tests held them for "
                f"{_REAL_TIME_WAIT_S:.0f} s"))
        try:
            yield
        finally:
            for slot in held or ():
                fcntl.flock(slot.fileno(), fcntl.LOCK_UN)


def _take(queue: IO[str], slots: Sequence[IO[str]], cores: int) -> list[IO[str]] | None:
    """Lock ``cores`` free slots, first in line: the queue file is held while waiting for them,
    so a two-core test is not overtaken for ever by one-core tests taking turns with the other
    slot; nobody waits for the queue while holding a slot, so nothing deadlocks. None after
    ``_REAL_TIME_WAIT_S``."""
    deadline = time.monotonic() + _REAL_TIME_WAIT_S
    if not _wait(queue, deadline):
        return None
    held: list[IO[str]] = []
    try:
        while True:
            for slot in slots:
                if len(held) < cores and slot not in held and _try(slot):
                    held.append(slot)
            if len(held) == cores:
                return held
            if time.monotonic() > deadline:
                for slot in held:
                    fcntl.flock(slot.fileno(), fcntl.LOCK_UN)
                return None
            time.sleep(0.2)
    finally:
        fcntl.flock(queue.fileno(), fcntl.LOCK_UN)


def _try(lock: IO[str]) -> bool:
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait(lock: IO[str], deadline: float) -> bool:
    while not _try(lock):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--hil-modbus`` / ``--hil-serial``: run tests/hil against a real device."""
    add_hil_options(parser)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
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
