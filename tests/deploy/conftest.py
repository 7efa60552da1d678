"""Fixtures of the deploy tests: Mosquitto processes that always end with the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy.mosquitto import Brokers, mosquitto_binary


@pytest.fixture
def brokers() -> Iterator[Brokers]:
    running = Brokers(binary=mosquitto_binary())
    try:
        yield running
    finally:
        running.stop_all()
