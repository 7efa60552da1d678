"""The ledger block format: one block per interval, chained by hash.

A block records what the community agreed for one interval and what this node settled, so an
owner (or an auditor) can replay the money: the digest of the bid set, the hash of the clearing
result, the commitments that formed the quorum and the settlement. ``prev_hash`` makes the ledger
append-only in effect: changing any earlier block changes every hash after it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from protocols.canonical import canonical_bytes

GENESIS_HASH = "0" * 64


class Block(BaseModel):
    """One settled interval. ``content`` holds the agreed record as canonical-JSON-able data."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    height: int = Field(ge=0)
    interval: int = Field(ge=0)
    status: str = Field(pattern=r"^(agreed|abstained)$")
    prev_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    content: dict[str, Any]

    def digest(self) -> str:
        """sha256 over the canonical bytes of every field: the next block's ``prev_hash``."""
        return hashlib.sha256(canonical_bytes(self.model_dump())).hexdigest()


def next_block(
    *, prev: Block | None, interval: int, status: str, content: dict[str, Any]
) -> Block:
    """The block that follows ``prev`` (or the first block when ``prev`` is None)."""
    if prev is not None and interval <= prev.interval:
        raise ValueError(f"interval {interval} does not follow interval {prev.interval}")
    return Block(
        height=0 if prev is None else prev.height + 1,
        interval=interval,
        status=status,
        prev_hash=GENESIS_HASH if prev is None else prev.digest(),
        content=content,
    )


def verify_chain(blocks: Iterable[tuple[Block, str]]) -> list[str]:
    """Problems found walking (block, stored_hash) pairs in height order; empty when intact."""
    problems: list[str] = []
    prev: Block | None = None
    for block, stored in blocks:
        expected_prev = GENESIS_HASH if prev is None else prev.digest()
        expected_height = 0 if prev is None else prev.height + 1
        if block.height != expected_height:
            problems.append(f"block {block.height}: expected height {expected_height}")
        if block.prev_hash != expected_prev:
            problems.append(f"block {block.height}: prev_hash does not match block before it")
        if block.digest() != stored:
            problems.append(f"block {block.height}: content does not match its stored hash")
        if prev is not None and block.interval <= prev.interval:
            problems.append(f"block {block.height}: interval {block.interval} out of order")
        prev = block
    return problems
