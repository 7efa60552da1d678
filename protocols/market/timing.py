"""When each step of a market interval happens: integer ms arithmetic, no clock."""

from __future__ import annotations

from dataclasses import dataclass

from protocols.market.errors import SessionError


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """Interval k starts at ``epoch_ms + k * length_ms``; the gate closes ``gate_ms`` before that;
    clearing runs ``grace_ms`` after the gate (time for late deliveries through the broker); the
    rest of ``gate_ms`` is for commitments to reach a quorum before dispatch begins."""

    epoch_ms: int
    length_ms: int
    gate_ms: int
    grace_ms: int

    def __post_init__(self) -> None:
        if self.length_ms <= 0 or self.grace_ms <= 0 or self.gate_ms <= self.grace_ms:
            raise SessionError(
                f"need length_ms > 0 and gate_ms > grace_ms > 0, got length {self.length_ms}, "
                f"gate {self.gate_ms}, grace {self.grace_ms}"
            )

    def start_ms(self, k: int) -> int:
        return self.epoch_ms + k * self.length_ms

    def end_ms(self, k: int) -> int:
        return self.start_ms(k + 1)

    def gate_close_ms(self, k: int) -> int:
        return self.start_ms(k) - self.gate_ms

    def clear_ms(self, k: int) -> int:
        return self.gate_close_ms(k) + self.grace_ms

    def union_ms(self, k: int) -> int:
        """Halfway from clearing to the start: with no quorum by then, every member clears the
        union of the bids the commitments list (:mod:`protocols.market.session`)."""
        return self.clear_ms(k) + (self.start_ms(k) - self.clear_ms(k)) // 2

    def open_interval(self, now_ms: int) -> int:
        """The earliest interval whose gate is still open at ``now_ms``."""
        return (now_ms + self.gate_ms - self.epoch_ms) // self.length_ms + 1
