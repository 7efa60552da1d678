"""Seeded fault injection for a served device: dropped or corrupted responses, delay, offline.

Sans-I/O: the transport adapter (``sim_devices/serve.py``) asks ``decide`` what to do with each
response it is about to send and does it. Drawing every decision from one ``random.Random(seed)``
in request order makes a faulty run reproducible: the same requests meet the same faults.

Faults hit responses, not requests: the device has still applied a write whose reply was lost,
which is exactly the ambiguity a gateway must survive on a real bus.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


class FaultSpecError(ValueError):
    """A fault spec that cannot be applied (probability outside [0, 1], window upside down)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultSpec:
    """What can go wrong with one device.

    ``drop_p`` and ``corrupt_p`` are per-response probabilities; ``delay_s`` (real seconds, since
    the client waits in real time) is added to every response, plus up to ``jitter_s``;
    ``offline`` holds simulated-time windows ``(start_s, end_s)`` in which the device is silent.
    """

    drop_p: float = 0.0
    corrupt_p: float = 0.0
    delay_s: float = 0.0
    jitter_s: float = 0.0
    offline: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        for name in ("drop_p", "corrupt_p"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise FaultSpecError(f"{name} must be in [0, 1], got {p}")
        if self.delay_s < 0 or self.jitter_s < 0:
            raise FaultSpecError("delay_s and jitter_s must be >= 0")
        for start, end in self.offline:
            if not start < end:
                raise FaultSpecError(f"offline window ({start}, {end}) must have start < end")


@dataclass(frozen=True, slots=True)
class Fault:
    """The fate of one response: ``data`` None means it is not sent at all."""

    data: bytes | None
    delay_s: float = 0.0
    reason: str = "ok"


class FaultInjector:
    """Applies a ``FaultSpec`` to responses, reproducibly from ``seed``."""

    def __init__(self, spec: FaultSpec, *, seed: int | str) -> None:
        self._spec = spec
        self._rng = random.Random(seed)
        self.counts: dict[str, int] = {"ok": 0, "offline": 0, "dropped": 0, "corrupted": 0}

    def decide(self, response: bytes, *, now_s: float, keep_prefix: int = 0) -> Fault:
        """What happens to ``response`` sent at simulated time ``now_s``.

        ``keep_prefix`` bytes are never corrupted: a TCP adapter protects the MBAP header so a
        corrupted reply stays one reply (a mangled length would just look like a drop).
        """
        spec = self._spec
        # Draw every number every time, so one decision never shifts the ones after it.
        drop, corrupt, jitter = self._rng.random(), self._rng.random(), self._rng.random()
        position, flip = self._rng.random(), self._rng.randrange(1, 256)
        delay = spec.delay_s + spec.jitter_s * jitter
        if any(start <= now_s < end for start, end in spec.offline):
            return self._count(Fault(None, 0.0, "offline"))
        if drop < spec.drop_p:
            return self._count(Fault(None, 0.0, "dropped"))
        if corrupt < spec.corrupt_p and len(response) > keep_prefix:
            i = keep_prefix + int(position * (len(response) - keep_prefix))
            mangled = bytearray(response)
            mangled[i] ^= flip
            return self._count(Fault(bytes(mangled), delay, "corrupted"))
        return self._count(Fault(response, delay, "ok"))

    def _count(self, fault: Fault) -> Fault:
        self.counts[fault.reason] += 1
        return fault
