"""A community broker site for the tests: generated certificates and config, agents over TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import os
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.installer.brokerconfig import BrokerFiles, write_broker_config
from gateway.market.agent import MarketAgent
from protocols.market import topics
from protocols.signing import generate_key
from tests.market.community import COMMUNITY, PARAMS, Community, now_ms

NODES = ("alice", "bob", "carol", "dave")


def run_as() -> str | None:
    """Started as root, Mosquitto drops to user ``mosquitto``, which cannot read a test's keys
    under a private temporary folder; stay the current user instead."""
    return getpass.getuser() if os.geteuid() == 0 else None


def write_site(out: Path, port: int, *, bridge_to: tuple[str, int] | None = None) -> BrokerFiles:
    files, _ = write_broker_config(
        out=out, community=COMMUNITY, nodes=NODES, now=dt.datetime.now(dt.UTC), port=port,
        bridge_to=bridge_to, run_as=run_as(),
    )
    return files


TEST_LIMIT_W = 10_000_000
"""Certificate limits of the test agents: orders are clipped to the limit over the interval, and
the tests' bids of 1,000s of Wh in 1 s intervals need megawatts (2,777 Wh a second here)."""


def tls_agent(community: Community, files: BrokerFiles, port: int, node: str,
              **options: Any) -> MarketAgent:
    key = generate_key()
    return MarketAgent(
        broker_url=f"mqtts://127.0.0.1:{port}", community=COMMUNITY, node=node, identity=key,
        certificate=community.certificate(node, key, import_limit_w=TEST_LIMIT_W,
                                          export_limit_w=TEST_LIMIT_W),
        authority_key_hex=community.authority_hex,
        timing=community.timing, params=PARAMS, clock=now_ms, tls=files.node(node), **options,
    )


async def retained(port: int, files: BrokerFiles, topic: str) -> bytes:
    """What the broker holds retained on ``topic`` (b"" for nothing), read by a fresh client."""
    tls = files.node("dave").client_context()
    async with aiomqtt.Client("127.0.0.1", port, identifier="dave-probe", tls_context=tls,
                              timeout=5) as probe:
        sentinel = topics.roster(COMMUNITY, "dave")
        await probe.subscribe(topic, qos=1)
        await probe.subscribe(sentinel, qos=1)  # after ``topic``: its retained message is first
        await probe.publish(sentinel, b"probe", qos=1)
        async with asyncio.timeout(10):
            async for message in probe.messages:
                if message.topic.value == topic:
                    return bytes(message.payload)
                if message.topic.value == sentinel:
                    return b""
    raise AssertionError("message stream ended")
