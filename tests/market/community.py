"""A test community: an authority key, certificates, agents on a real broker, a real clock.

Intervals are short (1 s) and the clock is the real one, so a test waits for at most a few
intervals; nothing asserts how fast anything happens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import patch

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.market.agent import MarketAgent
from protocols.clearing import ClearingParams, Tariffs
from protocols.market import Timing
from protocols.messages import MembershipCertificate, SignedEnvelope
from protocols.signing import generate_key, public_key_hex, sign

COMMUNITY = "oak-street"
PARAMS = ClearingParams(tariffs=Tariffs(retail_price=300, feed_in_price=80))
HOUR_MS = 3_600_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def timing() -> Timing:
    return Timing(epoch_ms=now_ms(), length_ms=1000, gate_ms=600, grace_ms=150)


@dataclass
class Community:
    authority: Ed25519PrivateKey = field(default_factory=generate_key)
    timing: Timing = field(default_factory=timing)

    @property
    def authority_hex(self) -> str:
        return public_key_hex(self.authority)

    def certificate(
        self, node: str, key: Ed25519PrivateKey, *, valid_from_ms: int | None = None,
        valid_until_ms: int | None = None, community: str = COMMUNITY,
        import_limit_w: int = 10_000, export_limit_w: int = 10_000,
    ) -> SignedEnvelope:
        start = now_ms() - HOUR_MS if valid_from_ms is None else valid_from_ms
        end = now_ms() + HOUR_MS if valid_until_ms is None else valid_until_ms
        cert = MembershipCertificate(
            community=community, node=node, public_key=public_key_hex(key), bus="b1",
            import_limit_w=import_limit_w, export_limit_w=export_limit_w, valid_from_ms=start,
            valid_until_ms=end,
        )
        return sign("cert", cert, self.authority)

    def agent(self, url: str, node: str, key: Ed25519PrivateKey | None = None,
              **options: Any) -> MarketAgent:
        """``options``: more of :class:`MarketAgent`'s keyword arguments."""
        key = key or generate_key()
        return MarketAgent(
            broker_url=url, community=COMMUNITY, node=node, identity=key,
            certificate=self.certificate(node, key), authority_key_hex=self.authority_hex,
            timing=self.timing, params=PARAMS, clock=now_ms, **options,
        )

    async def agents(self, stack: AsyncExitStack, url: str, *nodes: str) -> list[MarketAgent]:
        return [await stack.enter_async_context(self.agent(url, node)) for node in nodes]

    def next_interval(self, margin_ms: int = 250) -> int:
        """An interval whose gate is still at least ``margin_ms`` away: time to publish bids."""
        return self.timing.open_interval(now_ms() + margin_ms)


def faulty(agent: MarketAgent, fault: Callable[[str], bool]) -> AbstractContextManager[object]:
    """Patch ``agent``'s link so that a delivered message whose topic ``fault`` flags is lost."""
    deliver = agent._link._deliver

    def lossy(message: aiomqtt.Message) -> None:
        if not fault(message.topic.value):
            deliver(message)

    return patch.object(agent._link, "_deliver", lossy)
