"""The gateway's notion of time, injectable so a simulated day can run in a minute.

In the field the clock is the wall clock (``speed`` 1). In the demo and tests the world runs
``speed`` times faster than real time and every gateway reads the same scaled clock, so interval
timing, forecasts by time of day and energy over an interval all agree with the simulated physics.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


def monotonic() -> float:
    """Seconds on the running event loop's clock (``time.monotonic`` outside a loop, and inside
    asyncio's own loops). Every timer of the loop runs on it, so a loop on virtual time
    (:mod:`sim_devices.virtual_time`) moves the gateway's readings of time with its timers."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


@dataclass(frozen=True, slots=True)
class Clock:
    """``now_ms`` = ``origin_ms`` + elapsed real time × ``speed``."""

    origin_ms: int
    speed: float = 1.0
    _t0: float = field(default_factory=monotonic)

    @classmethod
    def wall(cls) -> Clock:
        return cls(origin_ms=time.time_ns() // 1_000_000)

    def now_ms(self) -> int:
        return self.origin_ms + int((monotonic() - self._t0) * 1000 * self.speed)

    def real_seconds(self, clock_ms: float) -> float:
        """How long ``clock_ms`` of this clock's time takes in real seconds."""
        return clock_ms / 1000 / self.speed

    async def sleep_until(self, when_ms: int) -> None:
        delay = self.real_seconds(when_ms - self.now_ms())
        if delay > 0:
            await asyncio.sleep(delay)
