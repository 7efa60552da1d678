"""Suite-wide fixtures."""

import threading

import pytest

from tests.brokers import any_broker, mosquitto  # noqa: F401  (fixtures for every test)
from tests.hil.options import add_hil_options

_REAL_TIME = (
    "tests/faults/", "tests/test_day_", "tests/test_end_to_end.py",
    "tests/test_settlement_community.py", "tests/test_network_gateways.py",
    "tests/gateway/test_ev_night.py",
    "tests/market/test_feeder_100.py",
    "tests/market/test_flood.py",
)
"""Whole communities on a scaled clock: with ``-n 2 --dist loadgroup`` they all run on one
worker, one at a time, so two of them never compete for the same cores and miss each other's
deadlines; the rest of the suite shares the other worker."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(_REAL_TIME):
            item.add_marker(pytest.mark.xdist_group("real-time"))


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--hil-modbus`` / ``--hil-serial``: run tests/hil against a real device."""
    add_hil_options(parser)


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Fail a test that leaves threads running: a leaked poller or client thread hides a bug.

    Same idea as pymodbus's own suite fixture; asyncio tasks are covered by pytest-asyncio closing
    the loop per test.
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
