"""One signature check per message for the whole simulated community, not one per member.

Every member parses and verifies the same signed bytes that the broker fans out to it: at five
members that was most of a run's time, and it grows with the community (each message reaches
every member). Parsing and verifying are a pure function of the bytes, the size limit and the
expected kind (:data:`protocols.market.market.Opener`), so the members of one run share the
answer for the same bytes: each member's :class:`~protocols.market.Market` still takes every
payload through the same checks in the same order, only the work behind the answer is done once.
A gateway shares nothing: it keeps the market's own
:func:`~protocols.market.market.open_signed`.
"""

from __future__ import annotations

from protocols.market.market import OpenedKind, open_signed
from protocols.messages import SignedEnvelope
from protocols.signing import Rejected, Verified


class SharedOpener:
    """:func:`~protocols.market.market.open_signed`, remembered by exact bytes for one run."""

    def __init__(self) -> None:
        self._opened: dict[tuple[bytes, int, OpenedKind, str | None],
                           tuple[SignedEnvelope, Verified] | Rejected] = {}

    def __call__(self, payload: bytes, max_size: int, kind: OpenedKind, signer: str | None
                 ) -> tuple[SignedEnvelope, Verified] | Rejected:
        key = (payload, max_size, kind, signer)
        opened = self._opened.get(key)
        if opened is None:
            opened = self._opened[key] = open_signed(payload, max_size, kind, signer)
        return opened
