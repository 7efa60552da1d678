"""Inner scheduling: cover the home first, offer only the residual, each Wh at what it is worth.

The market only ever sees what the home cannot sensibly do for itself. Before each interval the EMS
forecasts PV and load for it, takes the energy the controllable loads run in it (EV charging,
deferrable appliances: ``gateway/flex_plan.py`` shifts them), plans the battery (self-consumption
within its SoC and power limits, keeping the owner's reserve) and turns what is left into one bid:
a sell offer for a surplus, a buy bid for a deficit, priced from the owner's preferences between
the feed-in and retail tariffs.

The shifted loads take the surplus before the battery does (a load that has to run anyway stores
energy without the battery's losses), and the battery covers only the base load's deficit: a load
the plan runs from the grid is bought, not drained from the battery at a loss.

The bid is a curve (``Plan.steps``, :class:`protocols.messages.Step`): energy is not worth the same
to the home for every Wh, and a home must never offer a Wh below what it is worth to it, nor bid
above. Each Wh is priced at no less (sell) or no more (buy) than its value, and inside the owner's
limits: never sell below ``min_sell_price``, never buy above ``max_buy_price``, both clamped into
[feed-in, retail]. Without a forecast ahead the plan is self-consumption and the bid has one step:
a surplus the battery cannot take is exported otherwise, worth feed-in, offered at the owner's
minimum; a deficit the battery does not cover is bought at retail otherwise, bid at the owner's
maximum.

With the forecast of the day ahead (``gateway/lookahead.py``) the plan looks past the interval.

* Buying: what the forecast evening would otherwise buy at retail is kept in the battery (a
  deficit now is bid for instead of drained: a kept Wh saves one bought at retail later, so it is
  bid just below retail) and, when the battery has room, more is bought to charge it (a Wh
  bought saves retail x both efficiencies later, bid just below that). The curve: the deficit the
  battery would not cover at the owner's maximum, then the kept energy, then the charging energy,
  each capped by the owner's maximum, equal prices merged.
* Selling: the surplus the battery cannot take comes first, at the owner's minimum; then the
  energy the battery would store this interval (not stored, a Wh is sold at the meter) and
  then its stored energy (discharged, to the home's power share), each valued at what the home
  loses over the day ahead without it (:func:`gateway.lookahead.removal_cost`): feed-in per Wh
  the day's surplus refills, what it saves at retail per Wh the home would otherwise use. The
  forecast is a learned average, so the day ahead is valued as forecast and with half its sun
  (``SUN_SCENARIOS``), equally likely: energy the forecast day refills but a cloudier one would
  need is priced halfway between. A Wh worth retail or more is not offered (the grid pays no
  more), so the energy the evening needs stays home.

Bids are priced so they only clear when they pay, and a step that does not clear costs nothing:
the dispatch follows the cleared position, so the battery covers an uncleared deficit, and keeps
an uncleared surplus, as it would have without the market.

Pure: readings and forecasts in, a plan out. The trader (gateway/home/trader.py) feeds it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise

from gateway.lookahead import Ahead, refilled_wh, useful_storage_wh
from protocols.clearing import Side, Tariffs
from protocols.messages import Step

SUN_SCENARIOS = (1.0, 0.5)
"""The days ahead stored energy is valued on, equally likely: as forecast, and with half its sun.
The forecast is a learned average of the days seen; a cloudier one is common."""


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
    v2g_min_soc_pct: float | None = None
    """The owner's consent to V2G: the car's SoC it is never drawn below (None: no V2G)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """One interval's plan: battery energy at its terminals and the residual offered to the market.

    ``battery_wh`` is + for charging, − for discharging, with the whole bid cleared. ``residual_wh``
    is what is left at the meter after the shifted loads and the battery: + surplus (sell), −
    deficit (buy), 0 nothing to trade. ``flex`` is the energy each controllable load runs in
    the interval, by device name; a car that feeds the home (V2G) has it below 0. The bid is
    ``energy_wh`` at ``limit_price`` or, when the energy is worth different amounts, the curve
    ``steps`` (as :class:`protocols.messages.Bid` carries it: best first, ``energy_wh`` their
    total, ``limit_price`` the first step's, none for one step).
    """

    pv_wh: int
    load_wh: int
    battery_wh: int
    residual_wh: int
    side: Side | None
    energy_wh: int
    limit_price: int
    flex: tuple[tuple[str, int], ...] = ()
    steps: tuple[Step, ...] = ()

    @property
    def flex_wh(self) -> int:
        """Energy of every controllable load together in the interval."""
        return sum(wh for _, wh in self.flex)

    def curve(self) -> tuple[Step, ...]:
        """The bid's steps, best first (one step for a one-price bid, none without a bid)."""
        if self.side is None:
            return ()
        return self.steps or (Step(self.energy_wh, self.limit_price),)

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
    interval) lets the plan keep and buy energy for later, and sell energy the day ahead does
    not need, when that pays; without it the plan is self-consumption alone.
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
    residual = net - battery_wh
    curve: tuple[Step, ...] = ()
    if residual > 0:
        curve = (Step(residual, _clamp(prefs.min_sell_price, tariffs)),)
    elif residual < 0:
        curve = (Step(-residual, _clamp(prefs.max_buy_price, tariffs)),)
    if battery is not None and battery.capacity_wh > 0 and ahead is not None and ahead.blocks:
        looked = (_buy_ahead(battery_wh, net=net, battery=battery, prefs=prefs, tariffs=tariffs,
                             interval_s=interval_s, ahead=ahead)
                  or (_sell_ahead(battery_wh, net=net, battery=battery, prefs=prefs,
                                  tariffs=tariffs, interval_s=interval_s, ahead=ahead)
                      if residual >= 0 else None))
        if looked is not None:
            battery_wh, curve = looked
            residual = net - battery_wh
    energy = sum(step.wh for step in curve)
    side: Side | None = None
    if energy >= prefs.min_bid_wh:
        side = "sell" if residual > 0 else "buy"
    else:
        curve = ()
    return Plan(
        pv_wh=pv_wh,
        load_wh=load_wh,
        battery_wh=battery_wh,
        residual_wh=residual,
        side=side,
        energy_wh=energy if side else 0,
        limit_price=curve[0].price if curve else 0,
        flex=runs,
        steps=curve if len(curve) > 1 else (),
    )


def _buy_ahead(
    battery_wh: int, *, net: int, battery: BatteryState, prefs: Preferences, tariffs: Tariffs,
    interval_s: float, ahead: Ahead,
) -> tuple[int, tuple[Step, ...]] | None:
    """The battery energy and buy curve once the hours ahead are counted, from the one-interval
    plan's ``battery_wh``: first keep what it would drain, then charge from the market, as much
    as the forecast would draw later in place of energy bought then; None when neither pays.

    A kept Wh is worth retail later and costs the price now, so it is bid just below retail; a
    bought Wh loses the round trip, so it is bid just below retail times both efficiencies. The
    deficit the battery would not cover anyway comes first, at the owner's maximum: it is bought
    at retail otherwise. Each step is capped by the owner's maximum.
    """
    eta_c, eta_d = battery.charge_efficiency, battery.discharge_efficiency
    capacity = battery.capacity_wh
    stored = (battery.soc_pct - prefs.reserve_pct) / 100 * capacity
    after = stored + (battery_wh * eta_c if battery_wh > 0 else battery_wh / eta_d)
    headroom = max(0.0, (prefs.soc_max_pct - battery.soc_pct) / 100 * capacity)
    most = math.floor(min(battery.max_charge_w * interval_s / 3600 * _MARKET_POWER_SHARE,
                          headroom / eta_c))
    buy_price = _clamp(prefs.max_buy_price, tariffs)
    keep_price = min(buy_price, tariffs.retail_price - 1)
    charge_price = min(buy_price, math.ceil(tariffs.retail_price * eta_c * eta_d) - 1)
    keep_max = max(0, -battery_wh) if keep_price >= tariffs.feed_in_price else 0
    charge_max = max(0, most - max(0, battery_wh))
    if charge_price < tariffs.feed_in_price:
        charge_max = 0
    useful = useful_storage_wh(battery=battery, prefs=prefs, stored_wh=after,
                               extra_wh=keep_max / eta_d + charge_max * eta_c, ahead=ahead)
    keep = min(keep_max, _floor(useful * eta_d))
    charge = 0  # charged only once nothing is drained: a Wh less drained is a Wh kept
    if keep == keep_max:
        charge = max(0, min(charge_max, _floor((useful - keep / eta_d) / eta_c)))
    if keep + charge < prefs.min_bid_wh:
        return None
    curve = _merged((Step(max(0, battery_wh - net), buy_price), Step(keep, keep_price),
                     Step(charge, charge_price)))
    return battery_wh + keep + charge, curve


def _sell_ahead(
    battery_wh: int, *, net: int, battery: BatteryState, prefs: Preferences, tariffs: Tariffs,
    interval_s: float, ahead: Ahead,
) -> tuple[int, tuple[Step, ...]] | None:
    """The battery energy and sell curve once the hours ahead are counted, from the
    one-interval plan's ``battery_wh`` (which leaves no deficit); None when only the surplus is
    for sale.

    After the surplus (exported otherwise: worth feed-in), the cells give up energy in the
    cheapest order: first what the plan would charge this interval (a Wh not stored is a Wh
    sold), then what they hold (a Wh sold takes 1 / discharge efficiency from them), up to the
    battery's market share of its power and down to the reserve. Each cell Wh removed costs
    the home, per day ahead, the floor (feed-in / charge efficiency: the surplus that refills
    it is not exported) up to the amount the day refills (:func:`refilled_wh`), and at most what
    it would deliver at retail beyond; its value is the mean over ``SUN_SCENARIOS``. The chunks
    between those amounts are priced at their value per Wh at the meter, rounded up, and never
    below the owner's minimum; a chunk worth retail or more and all after it are not offered.
    """
    eta_c, eta_d = battery.charge_efficiency, battery.discharge_efficiency
    surplus, charge, cover = net - battery_wh, max(0, battery_wh), max(0, -battery_wh)
    before = (battery.soc_pct - prefs.reserve_pct) / 100 * battery.capacity_wh - cover / eta_d
    power = math.floor(battery.max_discharge_w * interval_s / 3600 * _MARKET_POWER_SHARE)
    discharge = max(0, min(power - cover, _floor(before * eta_d)))
    after = before + charge * eta_c
    span_c = max(0.0, min(charge * eta_c, after))  # what refills the reserve is not for sale
    span = span_c + discharge / eta_d
    if span <= 0:
        return None
    refilled = [refilled_wh(battery=battery, prefs=prefs, tariffs=tariffs, stored_wh=after,
                            most_wh=span, ahead=ahead.with_sun(sun)) for sun in SUN_SCENARIOS]
    floor, ceiling = tariffs.feed_in_price / eta_c, tariffs.retail_price * eta_d
    least = _clamp(prefs.min_sell_price, tariffs)
    steps = [Step(surplus, least)]
    sold = 0
    for low, high in pairwise(sorted({0.0, span_c, span, *refilled})):
        if high <= low:
            continue
        cell = sum(floor if high <= done else ceiling for done in refilled) / len(refilled)
        if high <= span_c:
            upto, value = _floor(high / eta_c), cell * eta_c
        else:
            upto, value = _floor(span_c / eta_c) + _floor((high - span_c) * eta_d), cell / eta_d
        price = max(least, steps[-1].price, math.ceil(value - _PRICE_SLACK))
        if price >= tariffs.retail_price:
            break
        if upto > sold:
            steps.append(Step(upto - sold, price))
            sold = upto
    if not sold:
        return None
    return battery_wh - sold, _merged(steps)


def _merged(steps: Iterable[Step]) -> tuple[Step, ...]:
    """Steps of a monotone curve with the empty ones left out and equal neighbours joined."""
    out: list[Step] = []
    for step in steps:
        if step.wh <= 0:
            continue
        if out and out[-1].price == step.price:
            out[-1] = Step(out[-1].wh + step.wh, step.price)
        else:
            out.append(step)
    return tuple(out)


_MARKET_POWER_SHARE = 0.75
"""Of the battery's power over an interval, what trading from or into the battery may plan on:
the dispatch needs room to catch up on the interval's first control period and on the
forecast's error, or energy bought goes out again at feed-in, and energy sold goes undelivered
(measured on sunny-street: ~20 % at full power)."""
_PRICE_SLACK = 1e-6
"""µ/Wh: a value exactly on a whole price must not round up past it through float error."""


def _floor(wh: float) -> int:
    """Whole Wh, down, but not a whole Wh below a float that only rounding put under it."""
    return math.floor(wh + 1e-6)


def _clamp(price: int, tariffs: Tariffs) -> int:
    """Nobody sells below feed-in (the grid pays that) or buys above retail (the grid's price)."""
    return min(max(price, tariffs.feed_in_price), tariffs.retail_price)
