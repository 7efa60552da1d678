"""How a configured device comes into the home: tried at start, retried with capped backoff while
it is absent or cannot be driven, and adopted once it answers, from the next market interval.

The gateway starts whatever its devices do, since a home whose inverter sleeps at night must
still meter and trade with what it has. A device that does not answer yet is retried
``ABSENT_FIRST_S`` after the first failure, the wait doubling up to ``ABSENT_MAX_S``: an inverter
asleep overnight is found within five minutes of waking, and each try costs one connection
attempt (one timeout on a shared RS-485 line) every five minutes at most. A device that answers
but cannot be driven (no SunSpec map, or no model its kind needs) is retried every
``UNSUPPORTED_S``: its map does not change by itself, but an installer enabling SunSpec in the
device's settings, or a firmware update, changes it without touching the gateway.

A device found once the home has started trading is adopted at the start of the next interval,
never in the middle of one: the interval's bid was made without it, and its metering and
dispatch start where the interval starts. Until then the market sees nothing of it.

Sans-I/O: monotonic seconds and interval numbers are parameters. The transitions are the table
below; any other raises. :class:`gateway.home.devices.Device` does the discovery and the waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from gateway.devices.errors import MissingModel, NotSunSpec

ABSENT_FIRST_S = 5.0
"""The wait after the first failed try of a device that does not answer."""
ABSENT_MAX_S = 300.0
"""The longest wait between two tries of a device that does not answer."""
UNSUPPORTED_S = 3600.0
"""The wait between two tries of a device that answers with a map its kind cannot be driven by."""


class Phase(Enum):
    WAITING = "waiting"
    """Not answering, or not drivable: retried at ``next_try_s``."""
    FOUND = "found"
    """Answered and drivable; adopted from interval ``adopt_from``."""
    ADOPTED = "adopted"
    """In the home: its poller owns it from now on."""


Event = Literal["failed", "answered", "interval"]

_TRANSITIONS: dict[tuple[Phase, Event], Phase] = {
    (Phase.WAITING, "failed"): Phase.WAITING,
    (Phase.WAITING, "answered"): Phase.FOUND,
    (Phase.FOUND, "interval"): Phase.ADOPTED,
}


class IllegalTransition(Exception):
    """Our own fault: an event the device's phase has no transition for."""


Why = Literal["absent", "unsupported"]


def why(error: BaseException) -> Why:
    """``unsupported`` when the device answered with a map its kind cannot be driven by, else
    ``absent`` (no connection, no answer, a refusal, a garbled reply: worth trying again soon)."""
    return "unsupported" if isinstance(error, MissingModel | NotSunSpec) else "absent"


@dataclass(slots=True)
class Adoption:
    """One device's way in. ``reason`` says what is missing and why while it is not adopted."""

    phase: Phase = Phase.WAITING
    tries: int = 0
    failures: int = 0
    """Failed tries in a row."""
    why: Why | None = None
    reason: str | None = None
    next_try_s: float = 0.0
    adopt_from: int | None = None

    def _move(self, event: Event) -> None:
        after = _TRANSITIONS.get((self.phase, event))
        if after is None:
            raise IllegalTransition(f"{event!r} while {self.phase.value}")
        self.phase = after

    def due(self, now_s: float) -> bool:
        """Whether a try is due now."""
        return self.phase is Phase.WAITING and now_s >= self.next_try_s

    def failed(self, now_s: float, error: BaseException) -> float:
        """A try failed with ``error``; the wait until the next (seconds)."""
        self._move("failed")
        self.tries += 1
        self.failures += 1
        self.why = why(error)
        self.reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if self.why == "unsupported":
            wait = UNSUPPORTED_S
        else:
            wait = min(ABSENT_MAX_S, ABSENT_FIRST_S * 2.0 ** min(self.failures - 1, 30))
        self.next_try_s = now_s + wait
        return wait

    def answered(self, interval: int, *, trading: bool) -> None:
        """A try found the device drivable during ``interval``. Before the home trades (at
        start) it is adopted at once; after, from the next interval."""
        self._move("answered")
        self.tries += 1
        self.failures = 0
        self.adopt_from = interval + 1 if trading else interval
        self.adopt(interval)

    def adopt(self, interval: int) -> bool:
        """Adopt the found device if ``interval`` is one it is adopted from; whether it now is."""
        if self.phase is Phase.FOUND:
            assert self.adopt_from is not None
            if interval >= self.adopt_from:
                self._move("interval")
                self.why = self.reason = None
        return self.phase is Phase.ADOPTED


__all__ = ["ABSENT_FIRST_S", "ABSENT_MAX_S", "UNSUPPORTED_S", "Adoption", "IllegalTransition",
           "Phase", "Why", "why"]
