"""DevicePoller: one long-lived task per device that keeps its latest reading fresh.

Readers (EMS, dispatcher, dashboard) never touch the bus: they take ``latest`` and decide from
``stale`` and ``age_s`` whether to trust it. That keeps a slow or dead device from stalling anyone
but its own poller. A failing device is polled less often (exponential backoff up to
``backoff_max_s``) so it does not eat a shared RS-485 bus, and every poll is bounded by
``poll_timeout_s`` so even a read that hangs cannot freeze the poller.

Data becomes stale after ``stale_after`` consecutive failed polls, or when the last good reading
is older than ``stale_after`` poll periods (which also covers a poller that stopped running).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from gateway.aio import raise_if_cancelling
from gateway.clock import monotonic
from gateway.devices.errors import DeviceError

_log = logging.getLogger(__name__)

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class Readable(Protocol[R_co]):
    """Anything with ``async read()``: every driver in this package."""

    async def read(self) -> R_co: ...


@dataclass(frozen=True, slots=True)
class PollerHealth:
    """Counters for the status page and metrics."""

    polls: int
    successes: int
    failures: int
    consecutive_failures: int
    last_error: str | None


class DevicePoller(Generic[R]):
    """Polls ``driver`` every ``period_s`` until cancelled (run it in a ``TaskGroup``)."""

    def __init__(
        self,
        *,
        name: str,
        driver: Readable[R],
        period_s: float,
        stale_after: int = 3,
        backoff_max_s: float = 30.0,
        poll_timeout_s: float = 10.0,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        if period_s <= 0 or poll_timeout_s <= 0:
            raise ValueError("period_s and poll_timeout_s must be > 0")
        if stale_after < 1:
            raise ValueError(f"stale_after must be >= 1, got {stale_after}")
        if backoff_max_s < period_s:
            raise ValueError("backoff_max_s must be >= period_s")
        self.name = name
        self._driver = driver
        self._period_s = period_s
        self._stale_after = stale_after
        self._backoff_max_s = backoff_max_s
        self._poll_timeout_s = poll_timeout_s
        self._clock = clock
        self._latest: R | None = None
        self._latest_at: float | None = None
        self._polls = self._successes = self._failures = self._consecutive = 0
        self._last_error: str | None = None
        self._changed = asyncio.Condition()

    @property
    def latest(self) -> R | None:
        """The last good reading, however old (check ``stale``)."""
        return self._latest

    @property
    def period_s(self) -> float:
        """Seconds between polls (while they succeed)."""
        return self._period_s

    @property
    def age_s(self) -> float | None:
        """Seconds since the last good reading, None if there has been none."""
        return None if self._latest_at is None else self._clock() - self._latest_at

    @property
    def stale(self) -> bool:
        """True when ``latest`` must not be acted on."""
        age = self.age_s
        return (
            age is None
            or self._consecutive >= self._stale_after
            or age > self._stale_after * self._period_s
        )

    @property
    def health(self) -> PollerHealth:
        return PollerHealth(
            polls=self._polls,
            successes=self._successes,
            failures=self._failures,
            consecutive_failures=self._consecutive,
            last_error=self._last_error,
        )

    def next_delay_s(self) -> float:
        """Time to the next poll: the period, doubled per consecutive failure up to the cap."""
        if not self._consecutive:
            return self._period_s
        factor: float = 2.0 ** min(self._consecutive, 30)
        return min(self._backoff_max_s, self._period_s * factor)

    async def run(self) -> None:
        """Poll forever. Errors are counted, never raised; cancellation stops it."""
        while True:
            started = self._clock()
            await self.poll_once()
            elapsed = self._clock() - started
            await asyncio.sleep(max(0.0, self.next_delay_s() - elapsed))

    async def poll_once(self) -> R | None:
        """One poll; returns the reading, or None if it failed (see ``health.last_error``)."""
        self._polls += 1
        try:
            async with asyncio.timeout(self._poll_timeout_s):
                reading = await self._driver.read()
        except Exception as exc:
            # Not only DeviceError: a reply that trips a bug in a driver's decoding is still a
            # failed poll (the device goes stale, and safe), never the end of the gateway.
            raise_if_cancelling(exc)
            self._failures += 1
            self._consecutive += 1
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if error != self._last_error or self._consecutive == 1:
                # Once per new reason: a device that stays down is retried for hours (an
                # inverter asleep at night), and a warning per poll would bury everything else.
                _log.warning("%s: poll failed (%d in a row): %s", self.name, self._consecutive,
                             error,
                             exc_info=None if isinstance(exc, DeviceError | TimeoutError) else exc)
            self._last_error = error
            reading = None
        else:
            self._successes += 1
            if self._consecutive:
                _log.info("%s: answering again after %d failed polls", self.name,
                          self._consecutive)
            self._consecutive = 0
            self._latest, self._latest_at = reading, self._clock()
        async with self._changed:
            self._changed.notify_all()
        return reading

    async def wait_until(self, predicate: Callable[[DevicePoller[R]], bool]) -> None:
        """Return once ``predicate(self)`` holds, re-checked after every poll."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))

