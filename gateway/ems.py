"""Inner scheduling: cover the home first, offer only the residual.

The market only ever sees what the home cannot sensibly do for itself. Before each interval the EMS
forecasts PV and load for it, plans the battery (self-consumption within its SoC and power limits,
keeping the owner's reserve) and turns what is left into one bid: a sell offer for a surplus, a buy
bid for a deficit, priced from the owner's preferences between the feed-in and retail tariffs.

Pure: readings and forecasts in, a plan out. The asyncio side (gateway/app.py) feeds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from protocols.clearing import Tariffs

Side = Literal["buy", "sell"]


@dataclass(frozen=True, slots=True)
class BatteryState:
    """What the plan needs to know about the battery, from the latest fresh reading."""

    capacity_wh: int
    soc_pct: float
    max_charge_w: int
    max_discharge_w: int
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95


@dataclass(frozen=True, slots=True)
class Preferences:
    """The owner's limits. Prices in µ/Wh; they are clamped into [feed-in, retail]."""

    min_sell_price: int
    max_buy_price: int
    reserve_pct: float = 20.0
    soc_max_pct: float = 95.0
    min_bid_wh: int = 1


@dataclass(frozen=True, slots=True)
class Plan:
    """One interval's plan: battery energy at its terminals and the residual offered to the market.

    ``battery_wh`` is + for charging, − for discharging. ``residual_wh`` is what is left at the
    meter after the battery: + surplus (sell), − deficit (buy), 0 nothing to trade.
    """

    pv_wh: int
    load_wh: int
    battery_wh: int
    residual_wh: int
    side: Side | None
    energy_wh: int
    limit_price: int

    def battery_power_w(self, interval_s: float) -> int:
        """Battery power that delivers ``battery_wh`` over ``interval_s`` (+ charge)."""
        return round(self.battery_wh * 3600 / interval_s)


def plan_interval(
    *,
    pv_wh: int,
    load_wh: int,
    battery: BatteryState | None,
    prefs: Preferences,
    tariffs: Tariffs,
    interval_s: float,
) -> Plan:
    """Plan one interval: battery covers the home's own deficit or stores its own surplus first.

    Charging stops at ``soc_max_pct`` and discharging at the reserve; both are limited by the
    battery's power over the interval. Efficiency losses are charged to the battery's side so the
    residual at the meter is what the home really exports or imports.
    """
    if pv_wh < 0 or load_wh < 0:
        raise ValueError(f"forecasts must be non-negative (pv_wh={pv_wh}, load_wh={load_wh})")
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    net = pv_wh - load_wh  # + surplus at the meter before the battery
    battery_wh = 0
    if battery is not None and battery.capacity_wh > 0:
        hours = interval_s / 3600
        if net > 0:
            headroom = (prefs.soc_max_pct - battery.soc_pct) / 100 * battery.capacity_wh
            by_room = max(0.0, headroom) / battery.charge_efficiency
            battery_wh = math.floor(min(net, battery.max_charge_w * hours, by_room))
        elif net < 0:
            stored = (battery.soc_pct - prefs.reserve_pct) / 100 * battery.capacity_wh
            by_energy = max(0.0, stored) * battery.discharge_efficiency
            battery_wh = -math.floor(min(-net, battery.max_discharge_w * hours, by_energy))
    residual = net - battery_wh
    side: Side | None = None
    energy = 0
    price = 0
    if residual >= prefs.min_bid_wh:
        side, energy = "sell", residual
        price = _clamp(prefs.min_sell_price, tariffs)
    elif -residual >= prefs.min_bid_wh:
        side, energy = "buy", -residual
        price = _clamp(prefs.max_buy_price, tariffs)
    return Plan(
        pv_wh=pv_wh,
        load_wh=load_wh,
        battery_wh=battery_wh,
        residual_wh=residual,
        side=side,
        energy_wh=energy,
        limit_price=price,
    )


def _clamp(price: int, tariffs: Tariffs) -> int:
    """Nobody sells below feed-in (the grid pays that) or buys above retail (the grid's price)."""
    return min(max(price, tariffs.feed_in_price), tariffs.retail_price)
