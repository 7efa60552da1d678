"""Inner scheduling: cover the home first, offer only the residual.

The market only ever sees what the home cannot sensibly do for itself. Before each interval the EMS
forecasts PV and load for it, takes the energy the controllable loads run in it (EV charging,
deferrable appliances: ``gateway/flex_plan.py`` shifts them), plans the battery (self-consumption
within its SoC and power limits, keeping the owner's reserve) and turns what is left into one bid:
a sell offer for a surplus, a buy bid for a deficit, priced from the owner's preferences between
the feed-in and retail tariffs.

The shifted loads take the surplus before the battery does (a load that has to run anyway stores
energy without the battery's losses), and the battery covers only the base load's deficit: a load
the plan runs from the grid is bought, not drained from the battery at a loss.

With the forecast of the day ahead (``gateway/lookahead.py``) the plan also looks past the
interval. Surplus is stored before any is offered: kept for an evening the battery cannot cover,
a Wh of PV is worth retail times the round trip (300 x 0.95 x 0.95 = 270 µ/Wh), more than an
offer at the owner's price usually clears at, and when the battery would be full anyway the
offer sells the same energy later. What the forecast evening would otherwise buy at retail is
kept in the battery: a deficit now is bid for instead of drained (it pays at any price below
retail) and, when the battery has room, more is bought to charge it (it pays below retail times
the round trip). Those bids are priced so they only clear when they pay, and one that does not
clear costs nothing: the dispatch follows the cleared position, so the battery covers an uncleared
deficit as it would have without the look-ahead.

Pure: readings and forecasts in, a plan out. The asyncio side (gateway/node.py) feeds it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gateway.lookahead import Ahead, useful_storage_wh
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
    ev_ready_by_min: int | None = None
    """Minute of the day the car must be charged by (the owner's ready-by), None: its departure."""


@dataclass(frozen=True, slots=True)
class Plan:
    """One interval's plan: battery energy at its terminals and the residual offered to the market.

    ``battery_wh`` is + for charging, − for discharging. ``residual_wh`` is what is left at the
    meter after the shifted loads and the battery: + surplus (sell), − deficit (buy), 0 nothing
    to trade. ``flex`` is the energy each controllable load runs in the interval, by device name.
    """

    pv_wh: int
    load_wh: int
    battery_wh: int
    residual_wh: int
    side: Side | None
    energy_wh: int
    limit_price: int
    flex: tuple[tuple[str, int], ...] = ()

    @property
    def flex_wh(self) -> int:
        """Energy of every controllable load together in the interval."""
        return sum(wh for _, wh in self.flex)

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
    flex: Mapping[str, int] | None = None,
    ahead: Ahead | None = None,
) -> Plan:
    """Plan one interval: battery covers the home's own deficit or stores its own surplus first.

    ``flex`` is the energy each controllable load runs in the interval (``plan_flex``); it is
    load the battery stores surplus after, and does not cover. Charging stops at
    ``soc_max_pct`` and discharging at the reserve; both are limited by the battery's power over
    the interval. Efficiency losses are charged to the battery's side so the residual at the
    meter is what the home really exports or imports. ``ahead`` (the forecast after the
    interval) lets the plan keep and buy energy for later when that pays; without it the plan
    is self-consumption alone.
    """
    runs = tuple(sorted((flex or {}).items()))
    if pv_wh < 0 or load_wh < 0 or any(wh < 0 for _, wh in runs):
        raise ValueError(f"forecasts and flexible loads must be non-negative (pv_wh={pv_wh}, "
                         f"load_wh={load_wh}, flex={dict(runs)})")
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    flex_wh = sum(wh for _, wh in runs)
    net = pv_wh - load_wh - flex_wh  # + surplus at the meter before the battery
    base_deficit = max(0, load_wh - pv_wh)  # what the battery may cover
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
            battery_wh = -math.floor(min(-net, base_deficit, battery.max_discharge_w * hours,
                                         by_energy))
    buy_price = _clamp(prefs.max_buy_price, tariffs)
    if battery is not None and battery.capacity_wh > 0 and ahead is not None and ahead.blocks:
        battery_wh, buy_price = _look_ahead(
            battery_wh, net=net, battery=battery, prefs=prefs, tariffs=tariffs,
            interval_s=interval_s, ahead=ahead, buy_price=buy_price)
    residual = net - battery_wh
    side: Side | None = None
    energy = 0
    price = 0
    if residual >= prefs.min_bid_wh:
        side, energy = "sell", residual
        price = _clamp(prefs.min_sell_price, tariffs)
    elif -residual >= prefs.min_bid_wh:
        side, energy = "buy", -residual
        price = buy_price
    return Plan(
        pv_wh=pv_wh,
        load_wh=load_wh,
        battery_wh=battery_wh,
        residual_wh=residual,
        side=side,
        energy_wh=energy,
        limit_price=price,
        flex=runs,
    )


def _look_ahead(
    battery_wh: int, *, net: int, battery: BatteryState, prefs: Preferences, tariffs: Tariffs,
    interval_s: float, ahead: Ahead, buy_price: int,
) -> tuple[int, int]:
    """The battery energy and buy price once the hours ahead are counted, from the one-interval
    plan's ``battery_wh``: first keep what it would drain, then charge from the market, as much
    as the forecast would draw later in place of energy bought then.

    Kept energy is worth retail later and costs the price now, so its bid is capped just below
    retail; bought energy loses the round trip, so its cap is retail times both efficiencies.
    The bid has one price: charging is only added where it does not lower the price of what the
    home bids anyway (a deficit now, bought at retail when it does not clear; energy kept).
    """
    eta_c, eta_d = battery.charge_efficiency, battery.discharge_efficiency
    capacity = battery.capacity_wh
    stored = (battery.soc_pct - prefs.reserve_pct) / 100 * capacity
    after = stored + (battery_wh * eta_c if battery_wh > 0 else battery_wh / eta_d)
    headroom = max(0.0, (prefs.soc_max_pct - battery.soc_pct) / 100 * capacity)
    most = math.floor(min(battery.max_charge_w * interval_s / 3600 * _MARKET_CHARGE_SHARE,
                          headroom / eta_c))
    keep_price = min(buy_price, tariffs.retail_price - 1)
    charge_price = min(buy_price, math.ceil(tariffs.retail_price * eta_c * eta_d) - 1)
    keep_max = max(0, -battery_wh) if keep_price >= tariffs.feed_in_price else 0
    charge_max = max(0, most - max(0, battery_wh))
    if charge_price < tariffs.feed_in_price:
        charge_max = 0
    useful = useful_storage_wh(battery=battery, prefs=prefs, stored_wh=after,
                               extra_wh=keep_max / eta_d + charge_max * eta_c, ahead=ahead)
    keep = min(keep_max, _floor(useful * eta_d))
    price = keep_price if keep > 0 else buy_price
    bids_anyway = keep > 0 or battery_wh - net >= prefs.min_bid_wh
    charge = 0
    if not bids_anyway or charge_price >= price:
        charge = max(0, min(charge_max, _floor((useful - keep / eta_d) / eta_c)))
    if keep + charge < prefs.min_bid_wh:
        return battery_wh, buy_price
    return battery_wh + keep + charge, min(price, charge_price) if charge > 0 else price


_MARKET_CHARGE_SHARE = 0.75
"""Of the battery's power over an interval, what charging from the market may plan on: the
dispatch needs room to catch up on the interval's first control period and on the forecast's
error, or energy bought goes out again at feed-in (measured on sunny-street: ~20 % at full
power)."""


def _floor(wh: float) -> int:
    """Whole Wh, down, but not a whole Wh below a float that only rounding put under it."""
    return math.floor(wh + 1e-6)


def _clamp(price: int, tariffs: Tariffs) -> int:
    """Nobody sells below feed-in (the grid pays that) or buys above retail (the grid's price)."""
    return min(max(price, tariffs.feed_in_price), tariffs.retail_price)
