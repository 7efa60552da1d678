"""The suite's broker tests run on both brokers a community may use.

``any_broker`` is parametrized: ``amqtt`` is the embedded broker of the demo (in-process), and
``mosquitto`` is what a community runs in the field, started as its own process with a plain
listener (the TLS and ACL configuration is tested in tests/deploy). A protocol that only works
on one broker's quirks would fail here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.installer.brokerconfig import render_limits
from sim_devices.demo.broker import EmbeddedBroker
from tests.deploy.mosquitto import Brokers, free_port, mosquitto_binary

BROKERS = ("amqtt", "mosquitto")


def mosquitto_config(folder: Path, port: int) -> Path:
    """A local Mosquitto without TLS, with the field broker's packet and queue limits, so the
    suite's bursts meet the queues a community runs with."""
    config = folder / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                      + render_limits())
    return config


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Brokers]:
    running = Brokers(binary=mosquitto_binary())
    try:
        yield running
    finally:
        running.stop_all()


@asynccontextmanager
async def _started(kind: str, brokers: Brokers | None, folder: Path) -> AsyncIterator[str]:
    if kind == "amqtt":
        async with EmbeddedBroker() as broker:
            yield broker.url
        return
    assert brokers is not None
    port = free_port()
    brokers.start(mosquitto_config(folder, port), port, folder / "mosquitto.log")
    yield f"mqtt://127.0.0.1:{port}"


@pytest.fixture(params=BROKERS)
async def any_broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a running broker: the embedded amqtt, then a Mosquitto process."""
    brokers = request.getfixturevalue("mosquitto") if request.param == "mosquitto" else None
    async with _started(request.param, brokers, tmp_path) as url:
        yield url
