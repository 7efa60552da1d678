"""The home's day as a linear programme: what the plan is asked (``Problem``) and the matrix HiGHS
solves (``build``).

One step is one market interval (96 of 15 min by default). Per step the energy balance at the
home's bus holds exactly: PV used + grid import − grid export + market position + battery and EV
discharge = base load + deferrable loads + battery and EV charge. The market position is a
financial quantity (bought + / sold −): the meter sees grid and market together, so the grid
operator's limits bound their sum (the meter), never one of them.

Limits come in two kinds. *Physics* (power, the cells' capacity, what the sun gives) and the
*grid operator's export limit* are hard bounds: there is always a way to keep them, since PV may
be curtailed and nothing is forced to discharge. *The owner's wishes* (the battery's reserve and
top, the EV's ready-by energy and V2G floor, a load's deadline) and the *import limit* are soft:
a start outside the window or a deadline no power can meet would make a hard programme
infeasible, so each has a slack variable priced far above any price the plan could gain by using
it, and the plan reports every slack it needed (``gateway/plan/result.py``). The import limit's
slack is priced a hundred times higher than the owner's: the base load it may have to cover is
never shed, everything else is given up first. A §14a dimming window caps what the home draws
*beyond its base load*, which is what the rule allows the operator to cap, so it never needs
slack.

Charging and discharging in the same step would waste energy in the round trip. With prices at
or above zero and a wear price on discharge, wasting is never cheaper than curtailing PV, so the
programme is linear: a per-step row ``charge/max_charge + discharge/max_discharge <= 1`` keeps
even a mixed step within what the converter can do by alternating. A step that pays the home to
take energy (a negative import or market price) makes wasting pay: with full cells the
programme would charge and discharge at once to be paid for the losses. The textbook answer is a
binary per battery and step (charge or discharge), a MILP, which HiGHS's branch and cut solves
many times slower than the LP (``python -m bench.bench_ems`` measures both). The planner
branches itself instead (``gateway/plan/planner.py``):
only on the steps where the solution wastes, each branch a warm re-solve of the LP with the
charge or the discharge held at zero, pruned by the LP's bound. It is the same exact search
(``tests/plan/test_plan_solver.py`` checks it against every charge/discharge choice), and the
first dive, discharge held, is nearly always the optimum: in a step that pays for every Wh
taken, energy a battery gives replaces energy the home would be paid to take.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from gateway.ems import BatteryState, Preferences
from gateway.flex_plan import FlexJob, slot_wh
from protocols.messages import MAX_PRICE

BATTERY = "battery"
"""The home battery's name in ``Problem.stale`` and in reported violations."""
_TIE = 1e-3
"""µ/Wh: PV used rather than curtailed when both cost the same (an export price of zero)."""

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


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
    the discharge loss, what the grid would pay for it at least).
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

    @property
    def steps(self) -> int:
        return len(self.pv_wh)

    @property
    def horizon_s(self) -> float:
        return self.steps * self.step_s

    def paid_to_take(self) -> tuple[int, ...]:
        """Steps where taking more energy earns money: a battery's losses could be sold."""
        market = self.market
        return tuple(t for t in range(self.steps)
                     if self.import_price[t] < 0
                     or (market is not None and market.price[t] < 0 and market.buy_wh[t] > 0))


def _check_battery(name: str, battery: BatteryState) -> None:
    if battery.capacity_wh < 0 or battery.max_charge_w < 0 or battery.max_discharge_w < 0:
        raise ValueError(f"{name}: capacity and powers must be >= 0")
    if not 0 <= battery.soc_pct <= 100:
        raise ValueError(f"{name}: soc_pct must be 0..100, got {battery.soc_pct}")
    for eta in (battery.charge_efficiency, battery.discharge_efficiency):
        if not 0 < eta <= 1:
            raise ValueError(f"{name}: efficiencies must be in (0, 1], got {eta}")


@dataclass(frozen=True, slots=True)
class Columns:
    """Where each quantity sits in the solution vector (indices per step; -1: absent)."""

    pv: IntArray
    grid_import: IntArray
    grid_export: IntArray
    market: IntArray
    charge: IntArray
    discharge: IntArray
    soc: IntArray
    below_reserve: IntArray
    above_top: IntArray
    ev_charge: IntArray
    ev_discharge: IntArray
    ev_soc: IntArray
    ev_below_floor: IntArray
    over_import: IntArray
    jobs: dict[str, IntArray]
    shortfall: dict[str, int]
    """Per job and the vehicle: the column of the energy its deadline misses."""


@dataclass(frozen=True, slots=True)
class Model:
    """The programme in HiGHS's terms: minimise ``cost·x`` with ``lower <= x <= upper`` and
    ``row_lower <= A x <= row_upper``; ``A`` row-wise (CSR)."""

    cost: FloatArray
    lower: FloatArray
    upper: FloatArray
    row_lower: FloatArray
    row_upper: FloatArray
    starts: IntArray
    index: IntArray
    value: FloatArray
    balance_rows: IntArray
    columns: Columns
    fixed_shortfall: dict[str, float]
    """Energy a deadline already missed before the horizon starts (due now): no column for it."""

    @property
    def num_col(self) -> int:
        return len(self.cost)

    @property
    def num_row(self) -> int:
        return len(self.row_lower)


def penalties(problem: Problem) -> tuple[float, float]:
    """(owner, grid) µ per Wh of slack: above what a Wh could gain anywhere in the day, twice
    over for the round trip, so the plan only uses slack it cannot avoid."""
    prices = [abs(p) for p in (*problem.import_price, *problem.export_price)]
    if problem.market is not None:
        prices += [abs(p) for p in problem.market.price]
    top = max(prices) + problem.wear_price + abs(problem.end_value or 0) + 1
    return 10 * top, 1000 * top


class _Builder:
    """Columns and row-wise coefficients, appended in blocks of numpy arrays."""

    def __init__(self) -> None:
        self.lower: list[FloatArray] = []
        self.upper: list[FloatArray] = []
        self.cost: list[FloatArray] = []
        self.row_lower: list[FloatArray] = []
        self.row_upper: list[FloatArray] = []
        self.entries: list[tuple[IntArray, IntArray, FloatArray]] = []
        self.n_col = 0
        self.n_row = 0

    def cols(self, n: int, *, lower: float | FloatArray = 0.0,
             upper: float | FloatArray = np.inf, cost: float | FloatArray = 0.0) -> IntArray:
        idx = np.arange(self.n_col, self.n_col + n, dtype=np.int64)
        for store, value in ((self.lower, lower), (self.upper, upper), (self.cost, cost)):
            store.append(np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy())
        self.n_col += n
        return idx

    def rows(self, n: int, *, lower: float | FloatArray = -np.inf,
             upper: float | FloatArray = np.inf) -> IntArray:
        idx = np.arange(self.n_row, self.n_row + n, dtype=np.int64)
        for store, value in ((self.row_lower, lower), (self.row_upper, upper)):
            store.append(np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy())
        self.n_row += n
        return idx

    def coef(self, rows: IntArray, cols: IntArray, value: float | FloatArray) -> None:
        """``A[rows[i], cols[i]] += value[i]``; entries whose column is absent (-1) are skipped."""
        rows, cols = np.broadcast_arrays(rows, cols)
        vals = np.broadcast_to(np.asarray(value, dtype=np.float64), rows.shape)
        keep = cols >= 0
        self.entries.append((rows[keep], cols[keep], vals[keep]))

    def csr(self) -> tuple[IntArray, IntArray, FloatArray]:
        rows = np.concatenate([r for r, _, _ in self.entries])
        cols = np.concatenate([c for _, c, _ in self.entries])
        vals = np.concatenate([v for _, _, v in self.entries])
        order = np.lexsort((cols, rows))
        starts = np.searchsorted(rows[order], np.arange(self.n_row + 1)).astype(np.int64)
        return starts, cols[order], vals[order]


def build(problem: Problem) -> Model:
    """The linear programme for ``problem``."""
    b = _Builder()
    steps = problem.steps
    owner_pen, grid_pen = penalties(problem)
    balance = b.rows(steps, lower=np.asarray(problem.load_wh, dtype=np.float64),
                     upper=np.asarray(problem.load_wh, dtype=np.float64))

    pv_top = np.asarray(problem.pv_wh, dtype=np.float64)
    if problem.pv_max_w is not None:
        pv_top = np.minimum(pv_top, slot_wh(problem.pv_max_w, problem.step_s))
    pv = b.cols(steps, upper=pv_top, cost=-_TIE)
    b.coef(balance, pv, 1.0)
    grid_import = b.cols(steps, cost=np.asarray(problem.import_price, dtype=np.float64))
    grid_export = b.cols(steps, cost=-np.asarray(problem.export_price, dtype=np.float64))
    b.coef(balance, grid_import, 1.0)
    b.coef(balance, grid_export, -1.0)
    if problem.market is not None:
        m = problem.market
        market = b.cols(steps, lower=-np.asarray(m.sell_wh, dtype=np.float64),
                        upper=np.asarray(m.buy_wh, dtype=np.float64),
                        cost=np.asarray(m.price, dtype=np.float64))
    else:  # held at zero, but there: the bid curve moves the first step's position
        market = b.cols(steps, upper=0.0)
    b.coef(balance, market, 1.0)
    over_import = _meter_limits(b, problem, grid_import, grid_export, market, grid_pen)

    end_value = _end_value(problem)
    store = _Store.absent(steps)
    if problem.battery is not None and problem.battery.capacity_wh > 0:
        store = _storage(b, problem, problem.battery, balance=balance, name=BATTERY,
                         plugged_s=None, floor_pct=problem.prefs.reserve_pct,
                         top_pct=problem.prefs.soc_max_pct, discharge=True,
                         end_value=end_value, owner_pen=owner_pen)
    ev = _Store.absent(steps)
    shortfall: dict[str, int] = {}
    fixed: dict[str, float] = {}
    vehicle = problem.vehicle
    if vehicle is not None and vehicle.battery.capacity_wh > 0:
        ev = _storage(b, problem, vehicle.battery, balance=balance, name=vehicle.name,
                      plugged_s=vehicle.departs_s,
                      floor_pct=vehicle.v2g_min_soc_pct if vehicle.v2g else None,
                      top_pct=None, discharge=vehicle.v2g, end_value=end_value,
                      owner_pen=owner_pen)
        _ready_by(b, problem, vehicle, ev, owner_pen, shortfall, fixed)
    jobs: dict[str, IntArray] = {}
    for job in problem.jobs:
        jobs[job.name] = _job(b, problem, job, balance, owner_pen, shortfall, fixed)

    starts, index, value = b.csr()
    columns = Columns(
        pv=pv, grid_import=grid_import, grid_export=grid_export, market=market,
        charge=store.charge, discharge=store.discharge, soc=store.soc,
        below_reserve=store.below, above_top=store.above, ev_charge=ev.charge,
        ev_discharge=ev.discharge, ev_soc=ev.soc, ev_below_floor=ev.below,
        over_import=over_import, jobs=jobs, shortfall=shortfall)
    return Model(
        cost=np.concatenate(b.cost), lower=np.concatenate(b.lower),
        upper=np.concatenate(b.upper), row_lower=np.concatenate(b.row_lower),
        row_upper=np.concatenate(b.row_upper), starts=starts, index=index, value=value,
        balance_rows=balance, columns=columns, fixed_shortfall=fixed)


def _end_value(problem: Problem) -> float:
    if problem.end_value is not None:
        return problem.end_value
    eta = problem.battery.discharge_efficiency if problem.battery is not None else 1.0
    return max(0.0, float(np.mean(problem.export_price))) * eta


def _meter_limits(b: _Builder, problem: Problem, grid_import: IntArray, grid_export: IntArray,
                  market: IntArray, grid_pen: float) -> IntArray:
    """``-export <= grid import − grid export + market <= import`` on every step with a limit;
    the import side may be exceeded only through a slack column (reported)."""
    steps = problem.steps
    absent = np.full(steps, -1, dtype=np.int64)
    if problem.grid is None:
        return absent
    caps = problem.grid
    top = np.full(steps, np.inf)
    bottom = np.full(steps, -np.inf)
    for t in range(steps):
        limit, dimmed, export = caps.import_wh[t], caps.dimmed_wh[t], caps.export_wh[t]
        if limit is not None:
            top[t] = limit
        if dimmed is not None:
            top[t] = min(top[t], dimmed + problem.load_wh[t])
        if export is not None:
            bottom[t] = -export
    limited = np.flatnonzero(np.isfinite(top) | np.isfinite(bottom))
    if len(limited) == 0:
        return absent
    rows = b.rows(len(limited), lower=bottom[limited], upper=top[limited])
    b.coef(rows, grid_import[limited], 1.0)
    b.coef(rows, grid_export[limited], -1.0)
    b.coef(rows, market[limited], 1.0)
    over = absent.copy()
    capped = np.flatnonzero(np.isfinite(top[limited]))
    over[limited[capped]] = b.cols(len(capped), cost=grid_pen)
    b.coef(rows[capped], over[limited[capped]], -1.0)
    return over


class _Store(NamedTuple):
    """The columns of one battery per step (-1: absent, e.g. after the car has left)."""

    charge: IntArray
    discharge: IntArray
    soc: IntArray
    below: IntArray
    above: IntArray

    @classmethod
    def absent(cls, steps: int) -> _Store:
        none = np.full(steps, -1, dtype=np.int64)
        return cls(none, none, none, none, none)


def _storage(b: _Builder, problem: Problem, battery: BatteryState, *, balance: IntArray,
             name: str, plugged_s: float | None, floor_pct: float | None,
             top_pct: float | None, discharge: bool, end_value: float, owner_pen: float) -> _Store:
    """Charge, discharge and stored energy (cells, end of each step) of one battery, with its
    window as soft rows: ``soc + below >= floor``, ``soc − above <= top``."""
    steps, step_s = problem.steps, problem.step_s
    absent = np.full(steps, -1, dtype=np.int64)
    plugged = steps if plugged_s is None else min(steps, math.ceil(plugged_s / step_s))
    if plugged == 0:
        return _Store.absent(steps)
    span = np.minimum(step_s, (plugged_s if plugged_s is not None else np.inf)
                      - np.arange(plugged) * step_s)
    charge_top = np.array([slot_wh(battery.max_charge_w, s) for s in span], dtype=np.float64)
    discharge_top = np.array([slot_wh(battery.max_discharge_w if discharge else 0, s)
                              for s in span], dtype=np.float64)
    if name in problem.stale:
        charge_top[0] = discharge_top[0] = 0.0
    capacity = float(battery.capacity_wh)
    start = battery.soc_pct / 100 * capacity
    eta_c, eta_d = battery.charge_efficiency, battery.discharge_efficiency
    cells = np.arange(plugged)
    charge = absent.copy()
    out = absent.copy()
    soc = absent.copy()
    charge[:plugged] = b.cols(plugged, upper=charge_top)
    out[:plugged] = b.cols(plugged, upper=discharge_top, cost=float(problem.wear_price))
    end_cost = np.zeros(plugged)
    if plugged == steps:
        end_cost[-1] = -end_value
    soc[:plugged] = b.cols(plugged, upper=capacity, cost=end_cost)
    b.coef(balance[:plugged], charge[:plugged], -1.0)
    b.coef(balance[:plugged], out[:plugged], 1.0)
    rhs = np.zeros(plugged)
    rhs[0] = start
    dynamics = b.rows(plugged, lower=rhs, upper=rhs)
    b.coef(dynamics, soc[:plugged], 1.0)
    b.coef(dynamics[1:], soc[:plugged - 1], -1.0)
    b.coef(dynamics, charge[:plugged], -eta_c)
    b.coef(dynamics, out[:plugged], 1.0 / eta_d)
    both = cells[(charge_top > 0) & (discharge_top > 0)]
    if len(both):
        share = b.rows(len(both), upper=1.0)
        b.coef(share, charge[both], 1.0 / charge_top[both])
        b.coef(share, out[both], 1.0 / discharge_top[both])
    below = absent.copy()
    above = absent.copy()
    if floor_pct is not None and floor_pct > 0:
        below[:plugged] = b.cols(plugged, cost=owner_pen)
        rows = b.rows(plugged, lower=floor_pct / 100 * capacity)
        b.coef(rows, soc[:plugged], 1.0)
        b.coef(rows, below[:plugged], 1.0)
    if top_pct is not None and top_pct < 100:
        above[:plugged] = b.cols(plugged, cost=owner_pen)
        rows = b.rows(plugged, upper=top_pct / 100 * capacity)
        b.coef(rows, soc[:plugged], 1.0)
        b.coef(rows, above[:plugged], -1.0)
    return _Store(charge, out, soc, below, above)


def _ready_by(b: _Builder, problem: Problem, vehicle: Vehicle, ev: _Store, owner_pen: float,
              shortfall: dict[str, int], fixed: dict[str, float]) -> None:
    """``ev_soc[due] + short >= target``: the energy the car must hold when it is due; past the
    horizon, less what it can still charge between the horizon's end and then."""
    battery = vehicle.battery
    target = vehicle.target_soc_pct / 100 * battery.capacity_wh
    start = battery.soc_pct / 100 * battery.capacity_wh
    due = vehicle.due_s
    steps, step_s = problem.steps, problem.step_s
    if due is None or due >= problem.horizon_s:  # still plugged in when the horizon ends
        after = 0.0 if due is None else slot_wh(battery.max_charge_w, due - problem.horizon_s)
        _short_row(b, vehicle.name, ev.soc[steps - 1],
                   target - after * battery.charge_efficiency, owner_pen, shortfall)
        return
    last = math.ceil(due / step_s) - 1
    if last < 0:
        if target > start:
            fixed[vehicle.name] = target - start
        return
    _short_row(b, vehicle.name, ev.soc[last], target, owner_pen, shortfall)


def _short_row(b: _Builder, name: str, soc_col: np.int64, target: float, owner_pen: float,
               shortfall: dict[str, int]) -> None:
    if target <= 0:
        return
    short = b.cols(1, cost=owner_pen)
    row = b.rows(1, lower=target)
    b.coef(row, np.array([soc_col]), 1.0)
    b.coef(row, short, 1.0)
    shortfall[name] = int(short[0])


def _job(b: _Builder, problem: Problem, job: FlexJob, balance: IntArray, owner_pen: float,
         shortfall: dict[str, int], fixed: dict[str, float]) -> IntArray:
    """A deferrable load: ``need − what fits after the horizon <= Σ run + short`` and
    ``Σ run <= need``, running at most ``max_w`` in the steps before it is due."""
    steps, step_s = problem.steps, problem.step_s
    cols = np.full(steps, -1, dtype=np.int64)
    active = min(steps, math.ceil(job.due_s / step_s))
    after = slot_wh(job.max_w, max(0.0, job.due_s - problem.horizon_s))
    owed = max(0, job.need_wh - after)
    if active <= 0:
        if owed > 0:
            fixed[job.name] = float(owed)
        return cols
    span = np.minimum(step_s, job.due_s - np.arange(active) * step_s)
    top = np.array([slot_wh(job.max_w, s) for s in span], dtype=np.float64)
    if job.name in problem.stale:
        top[0] = 0.0
    cols[:active] = b.cols(active, upper=top)
    b.coef(balance[:active], cols[:active], -1.0)
    row = b.rows(1, lower=float(owed), upper=float(job.need_wh))
    b.coef(np.repeat(row, active), cols[:active], 1.0)
    if owed > 0:
        short = b.cols(1, cost=owner_pen)
        b.coef(row, short, 1.0)
        shortfall[job.name] = int(short[0])
    return cols
