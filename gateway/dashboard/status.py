"""What the dashboard shows: the node's status, plus power flows and earnings from the ledger.

The node's :class:`~gateway.home.status.Status` is the owner's view of the gateway's state; the
dashboard adds the two things a homeowner asks first ("where is my power going?", "what did I
earn?") as one :class:`PageStatus`, so the page, the metrics and Home Assistant all read one
document and can never disagree.

Signs follow the project (+ = import / charge / consume) except ``pv_w``, shown as production
(≥ 0) because nobody reads "−3 kW of sunshine" as good news.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from gateway.clock import monotonic
from gateway.config import GatewayConfig, PreferencesConfig
from gateway.home.status import Status
from gateway.ledger import Ledger
from protocols.ledger import Block
from protocols.market import Timing

DAY_MS = 86_400_000


class DashboardNode(Protocol):
    """The part of ``GatewayNode`` the dashboard reads (a test may hand in anything that has it)."""

    @property
    def config(self) -> GatewayConfig: ...

    @property
    def timing(self) -> Timing: ...

    @property
    def ledger(self) -> Ledger | None: ...

    def status(self) -> Status: ...

    def update_preferences(self, prefs: PreferencesConfig) -> None: ...


def month_start_ms(now_ms: int) -> int:
    """Midnight UTC on the first of ``now_ms``'s month (days are UTC too, as in ``money_today``)."""
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return int(start.timestamp()) * 1000


def _first_interval(timing: Timing, start_ms: int) -> int:
    """The interval ``start_ms`` falls in: the first one counted for a day or month."""
    return (start_ms - timing.epoch_ms) // timing.length_ms


def money_earned(block: Block) -> int:
    """What the owner earned in ``block``'s interval (µ, + = received more than paid)."""
    return -int((block.content.get("outcome") or {}).get("money", 0))


class Earnings:
    """Money earned per interval this month, added block by block as the ledger grows.

    An interval counts for the day or month its start falls in; the day boundary is the same as
    the status's ``money_today`` so ``at(now).today == -money_today`` always holds. Blocks come
    in interval order (the chain refuses any other), so ``next_interval`` is where the next read
    starts. The arithmetic is sans-I/O; ``catch_up`` is the one place that reads a ledger.
    """

    def __init__(self, *, timing: Timing, from_interval: int = 0) -> None:
        self._timing = timing
        self._by_interval: dict[int, int] = {}
        self.height = -1
        """The ledger height read up to (-1: nothing read yet)."""
        self.next_interval = from_interval

    def add(self, block: Block) -> None:
        self._by_interval[block.interval] = money_earned(block)
        self.height = max(self.height, block.height)
        self.next_interval = block.interval + 1

    def at(self, now_ms: int) -> dict[str, int]:
        """``{"today": µ, "month": µ}`` at ``now_ms``; months before it are dropped."""
        day = _first_interval(self._timing, now_ms - now_ms % DAY_MS)
        month = _first_interval(self._timing, month_start_ms(now_ms))
        for k in [k for k in self._by_interval if k < month]:
            del self._by_interval[k]
        return {"today": sum(v for k, v in self._by_interval.items() if k >= day),
                "month": sum(self._by_interval.values())}

    def catch_up(self, ledger: Ledger) -> None:
        """Add the blocks written since the last read (none, normally, or one)."""
        height = ledger.height()
        if height > self.height:
            for block, _ in ledger.blocks(from_interval=self.next_interval):
                self.add(block)
            self.height = max(self.height, height)


def read_month(path: Path, *, timing: Timing, now_ms: int) -> Earnings:
    """``now_ms``'s month of earnings from the ledger file at ``path``, on a connection of the
    calling thread's own: the one read of a whole month, done off the event loop."""
    earnings = Earnings(timing=timing,
                        from_interval=_first_interval(timing, month_start_ms(now_ms)))
    with Ledger.open(path) as ledger:
        earnings.catch_up(ledger)
    return earnings


@dataclass(frozen=True, slots=True)
class Flows:
    """Grid, battery, PV and home power now (W); None where it is not known."""

    pv_w: int | None
    home_w: int | None
    battery_w: int | None
    grid_w: int | None


def flows(status: Status) -> Flows:
    """Grid, battery, PV and home power; the home load follows from the other three.

    The home load is None unless all three are known: a guess built on a stale reading would show
    the owner a consumption that never happened.
    """
    grid_w = None if status.meter is None else status.meter.power_w
    battery_w = None if status.battery is None else status.battery.power_w
    pv_w = None if status.pv is None else -status.pv.power_w
    home_w = None
    if grid_w is not None and battery_w is not None and pv_w is not None:
        home_w = grid_w - battery_w + pv_w
    return Flows(pv_w=pv_w, home_w=home_w, battery_w=battery_w, grid_w=grid_w)


@dataclass(frozen=True, slots=True)
class PageStatus:
    """The body of ``GET /api/status``: the home's status, its power flows, and its earnings
    (µ, + = received) ``today`` and this ``month``."""

    home: Status
    flows: Flows
    earnings: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {**self.home.to_json(), "flows": asdict(self.flows),
                "earnings": dict(self.earnings)}


def build_status(node: DashboardNode, earnings: Earnings) -> PageStatus:
    """The node's status plus its flows and earnings."""
    status = node.status()
    if node.ledger is not None:
        earnings.catch_up(node.ledger)
    return PageStatus(home=status, flows=flows(status), earnings=earnings.at(status.now_ms))


@dataclass(frozen=True, slots=True)
class StatusDocument:
    """One status as built (``page``), its JSON data, and ``body``, encoded once for every
    client."""

    page: PageStatus
    data: dict[str, Any]
    body: bytes


class StatusView:
    """The status every reader shares, rebuilt at most once per ``max_age_s``.

    However many clients poll, the node's status is taken and the document encoded at most once
    per ``max_age_s``, and the ledger is read only for the blocks written since the last build:
    serving a request costs the same on a year-old ledger as on a new one, and a crowd of clients
    cannot hold the event loop (the market's ticks, the MQTT keep-alive) for longer than one
    build. The month of earnings is read once, by ``open()``, in a worker thread.
    """

    def __init__(self, *, node: DashboardNode, max_age_s: float = 0.5,
                 monotonic: Callable[[], float] = monotonic) -> None:
        self._node = node
        self._max_age_s = max_age_s
        self._monotonic = monotonic
        self._earnings: Earnings | None = None
        self._built: tuple[float, StatusDocument] | None = None

    async def open(self) -> None:
        """Read this month's blocks once, in a thread, before the first status is served."""
        ledger, timing = self._node.ledger, self._node.timing
        if ledger is None:
            self._earnings = Earnings(timing=timing)
            return
        now_ms = self._node.status().now_ms
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-ledger") as pool:
            self._earnings = await loop.run_in_executor(
                pool, functools.partial(read_month, ledger.path, timing=timing, now_ms=now_ms))

    def current(self) -> StatusDocument:
        if self._earnings is None:
            raise RuntimeError("StatusView.open() first: it reads the month's earnings")
        now = self._monotonic()
        if self._built is not None and now - self._built[0] < self._max_age_s:
            return self._built[1]
        page = build_status(self._node, self._earnings)
        data = page.to_json()
        status = StatusDocument(page=page, data=data, body=json.dumps(data).encode())
        self._built = (now, status)
        return status
