"""What the home's day plan is asked: the forecasts, prices, devices and limits of every step
(``Problem``), with the vehicle (``Vehicle``), the market's outlook (``MarketOutlook``) and the grid
operator's caps (``GridCaps``).

One step is one market interval (96 of 15 min by default). Energies are whole Wh per step, prices
whole µ/Wh; everything is checked here, once, so the programme built from a ``Problem``
(``gateway/plan/build.py``) never meets a value it cannot take. The market position is a
financial quantity (bought + / sold −): the meter sees grid and market together, so the grid
operator's limits bound their sum (the meter), never one of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gateway.ems import BatteryState, Preferences
from gateway.flex_plan import FlexJob
from protocols.messages import MAX_PRICE

BATTERY = "battery"
"""The home battery's name in ``Problem.stale`` and in reported violations."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Vehicle:
    """An EV at the home's charger. ``battery`` is its pack (``max_discharge_w`` is what the
    charger can feed back, 0 without V2G); ``ready_by_s`` and ``departs_s`` count from the
    horizon's start (None: not before the horizon ends). ``v2g_min_soc_pct`` is the owner's
    consent to V2G and the floor it never drains below; None: no V2G."""

    name: str
    battery: BatteryState
    target_soc_pct: float
    ready_by_s: float | None = None
    departs_s: float | None = None
    v2g_min_soc_pct: float | None = None

    def __post_init__(self) -> None:
        _check_battery(self.name, self.battery)
        if not 0 <= self.target_soc_pct <= 100:
            raise ValueError(f"{self.name}: target_soc_pct must be 0..100, got "
                             f"{self.target_soc_pct}")
        if self.v2g_min_soc_pct is not None and not 0 <= self.v2g_min_soc_pct <= 100:
            raise ValueError(f"{self.name}: v2g_min_soc_pct must be 0..100, got "
                             f"{self.v2g_min_soc_pct}")
        for name in ("ready_by_s", "departs_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{self.name}: {name} must be >= 0, got {value}")

    @property
    def v2g(self) -> bool:
        """The owner consents and the charger can discharge."""
        return self.v2g_min_soc_pct is not None and self.battery.max_discharge_w > 0

    @property
    def due_s(self) -> float | None:
        """When the target energy is owed: ready-by, or departure if that comes first."""
        dues = [s for s in (self.ready_by_s, self.departs_s) if s is not None]
        return min(dues) if dues else None


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketOutlook:
    """What the home expects from its neighbours per step: the price it expects to clear at
    (µ/Wh, buying and selling) and the most it expects to buy or sell (Wh)."""

    price: tuple[int, ...]
    buy_wh: tuple[int, ...]
    sell_wh: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class GridCaps:
    """The grid operator's limits at the connection point per step, Wh (None: no limit).

    ``import_wh`` caps the meter's import, ``export_wh`` its export (0: zero export), and
    ``dimmed_wh`` what the home draws beyond its base load in a dimming window (§14a EnWG).
    """

    import_wh: tuple[int | None, ...]
    export_wh: tuple[int | None, ...]
    dimmed_wh: tuple[int | None, ...]

    @classmethod
    def none(cls, steps: int) -> GridCaps:
        empty: tuple[int | None, ...] = (None,) * steps
        return cls(import_wh=empty, export_wh=empty, dimmed_wh=empty)


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """Everything the plan needs about the day ahead, one value per step from the first.

    Energies in Wh per step, prices in µ/Wh (negative: the grid pays to deliver, or charges to
    take). ``import_price >= export_price`` in every step: the grid never pays more for energy
    than it charges. ``stale`` names the devices (``BATTERY``, a job's or the vehicle's name)
    that did not answer: they are held idle in the first step, the one the plan commands now.
    ``wear_price`` is what a Wh discharged from a battery costs it (µ/Wh); ``end_value`` what a
    Wh left in the cells at the end of the horizon is worth (default: the mean export price after
    the discharge loss, what the grid would pay for it at least). ``end_value_above``, when set,
    is what a Wh the home battery ends with above its start is worth instead: a horizon cut short
    (a day not yet learned, an inverter gone silent) values the energy the battery holds now at
    what replacing it would cost, but energy bought or kept on top of that has no use the plan
    has seen, so it is worth only what the grid pays for it.
    """

    step_s: float
    pv_wh: tuple[int, ...]
    load_wh: tuple[int, ...]
    import_price: tuple[int, ...]
    export_price: tuple[int, ...]
    prefs: Preferences
    battery: BatteryState | None = None
    jobs: tuple[FlexJob, ...] = ()
    vehicle: Vehicle | None = None
    market: MarketOutlook | None = None
    grid: GridCaps | None = None
    pv_max_w: int | None = None
    """The inverter's own output cap (not the grid operator's limit)."""
    stale: frozenset[str] = field(default_factory=frozenset)
    wear_price: int = 1
    end_value: float | None = None
    end_value_above: float | None = None
    later_price: float = 0.0
    """µ/Wh a deferrable load's energy will cost once the horizon has passed: 0 for a day the
    plan has seen (what it owes is planned), the import price when the horizon is cut short
    (energy run now on a surplus is then not bought later)."""

    def __post_init__(self) -> None:
        steps = len(self.pv_wh)
        if steps < 1:
            raise ValueError("a plan needs at least one step")
        if not (math.isfinite(self.step_s) and self.step_s > 0):
            raise ValueError(f"step_s must be positive, got {self.step_s}")
        series: dict[str, tuple[object, ...]] = {
            "load_wh": self.load_wh, "import_price": self.import_price,
            "export_price": self.export_price}
        if self.market is not None:
            series.update(market_price=self.market.price, market_buy_wh=self.market.buy_wh,
                          market_sell_wh=self.market.sell_wh)
        if self.grid is not None:
            series.update(import_wh=self.grid.import_wh, export_wh=self.grid.export_wh,
                          dimmed_wh=self.grid.dimmed_wh)
        for name, values in series.items():
            if len(values) != steps:
                raise ValueError(f"{name} has {len(values)} steps, pv_wh has {steps}")
        nonneg: dict[str, tuple[int | None, ...]] = {"pv_wh": self.pv_wh,
                                                     "load_wh": self.load_wh}
        if self.market is not None:
            nonneg.update(market_buy_wh=self.market.buy_wh, market_sell_wh=self.market.sell_wh)
        if self.grid is not None:
            nonneg.update(import_wh=self.grid.import_wh, export_wh=self.grid.export_wh,
                          dimmed_wh=self.grid.dimmed_wh)
        for name, values in nonneg.items():
            if any(v is not None and (type(v) is not int or v < 0) for v in values):
                raise ValueError(f"{name} must be whole Wh >= 0")
        prices = {"import_price": self.import_price, "export_price": self.export_price}
        if self.market is not None:
            prices["market_price"] = self.market.price
        for name, values in prices.items():
            if any(type(p) is not int or abs(p) > MAX_PRICE for p in values):
                raise ValueError(f"{name} must be integers within ±{MAX_PRICE} µ/Wh")
        bad = [t for t, (i, e) in enumerate(zip(self.import_price, self.export_price, strict=True))
               if i < e]
        if bad:
            raise ValueError(f"import_price below export_price in step {bad[0]}: the plan would "
                             "buy to sell back")
        if self.battery is not None:
            _check_battery(BATTERY, self.battery)
        names = [j.name for j in self.jobs] + ([self.vehicle.name] if self.vehicle else [])
        if len(set(names)) != len(names) or BATTERY in names:
            raise ValueError(f"device names must be unique and not {BATTERY!r}: {names}")
        if self.pv_max_w is not None and self.pv_max_w < 0:
            raise ValueError(f"pv_max_w must be >= 0, got {self.pv_max_w}")
        if not 0 <= self.wear_price <= MAX_PRICE:
            raise ValueError(f"wear_price must be 0..{MAX_PRICE}, got {self.wear_price}")
        if self.end_value is not None and not math.isfinite(self.end_value):
            raise ValueError("end_value must be finite")
        if not (math.isfinite(self.later_price) and 0 <= self.later_price <= MAX_PRICE):
            raise ValueError(f"later_price must be 0..{MAX_PRICE}, got {self.later_price}")

    @property
    def steps(self) -> int:
        return len(self.pv_wh)

    @property
    def horizon_s(self) -> float:
        return self.steps * self.step_s


def _check_battery(name: str, battery: BatteryState) -> None:
    if battery.capacity_wh < 0 or battery.max_charge_w < 0 or battery.max_discharge_w < 0:
        raise ValueError(f"{name}: capacity and powers must be >= 0")
    if not 0 <= battery.soc_pct <= 100:
        raise ValueError(f"{name}: soc_pct must be 0..100, got {battery.soc_pct}")
    for eta in (battery.charge_efficiency, battery.discharge_efficiency):
        if not 0 < eta <= 1:
            raise ValueError(f"{name}: efficiencies must be in (0, 1], got {eta}")
