"""What the dashboard shows: the node's snapshot, plus power flows and earnings from the ledger.

The node's ``snapshot()`` is the owner's view of the gateway's state; the dashboard adds the two
things a homeowner asks first ("where is my power going?", "what did I earn?") so the page, the
metrics and Home Assistant all read one dictionary and can never disagree.

Signs follow the project (+ = import / charge / consume) except ``pv_w``, shown as production
(≥ 0) because nobody reads "−3 kW of sunshine" as good news.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.config import GatewayConfig, PreferencesConfig
from gateway.devices import DevicePoller, PvReading
from gateway.ledger import Ledger
from gateway.market.session import Timing

DAY_MS = 86_400_000


class DashboardNode(Protocol):
    """The part of ``GatewayNode`` the dashboard reads (a test may hand in anything that has it)."""

    @property
    def config(self) -> GatewayConfig: ...

    @property
    def timing(self) -> Timing: ...

    @property
    def ledger(self) -> Ledger | None: ...

    @property
    def pv(self) -> DevicePoller[PvReading] | None: ...

    def snapshot(self) -> dict[str, Any]: ...

    def update_preferences(self, prefs: PreferencesConfig) -> None: ...


def month_start_ms(now_ms: int) -> int:
    """Midnight UTC on the first of ``now_ms``'s month (days are UTC too, as in ``money_today``)."""
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return int(start.timestamp()) * 1000


def earnings(node: DashboardNode, *, now_ms: int) -> dict[str, int]:
    """Money earned (µ, + = received more than paid) today and this month, from the ledger.

    An interval counts for the day or month its start falls in; the day boundary is the same as
    the snapshot's ``money_today`` so ``earnings.today == -money_today`` always holds.
    """
    if node.ledger is None:
        return {"today": 0, "month": 0}
    timing = node.timing

    def first_interval(start_ms: int) -> int:
        return (start_ms - timing.epoch_ms) // timing.length_ms

    day, month = first_interval(now_ms - now_ms % DAY_MS), first_interval(month_start_ms(now_ms))
    today = total = 0
    for block, _ in node.ledger.blocks(from_interval=min(day, month)):
        earned = -int((block.content.get("outcome") or {}).get("money", 0))
        total += earned if block.interval >= month else 0
        today += earned if block.interval >= day else 0
    return {"today": today, "month": total}


def pv_power_w(node: DashboardNode) -> int | None:
    """PV production now (W, ≥ 0), None when the inverter is missing or stale.

    The snapshot carries no PV reading yet, so this reads the poller as the snapshot does for the
    battery and meter.
    """
    poller = node.pv
    if poller is None or poller.stale or poller.latest is None:
        return None
    return -poller.latest.power_w


def flows(snapshot: dict[str, Any], *, pv_w: int | None) -> dict[str, int | None]:
    """Grid, battery, PV and home power; the home load follows from the other three.

    The home load is None unless all three are known: a guess built on a stale reading would show
    the owner a consumption that never happened.
    """
    meter, battery = snapshot.get("meter"), snapshot.get("battery")
    grid_w = None if meter is None else int(meter["power_w"])
    battery_w = None if battery is None else int(battery["power_w"])
    home_w = None
    if grid_w is not None and battery_w is not None and pv_w is not None:
        home_w = grid_w - battery_w + pv_w
    return {"pv_w": pv_w, "home_w": home_w, "battery_w": battery_w, "grid_w": grid_w}


def build_status(node: DashboardNode) -> dict[str, Any]:
    """``node.snapshot()`` plus ``flows`` and ``earnings``: the body of ``GET /api/status``."""
    snap = node.snapshot()
    return {
        **snap,
        "flows": flows(snap, pv_w=pv_power_w(node)),
        "earnings": earnings(node, now_ms=int(snap["now_ms"])),
    }
