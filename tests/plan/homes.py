"""Random homes for the plan's property tests: every device and limit the programme knows,
in any combination, including starts outside the window and deadlines no power can meet; and
random offers, as the trader cuts them."""

from __future__ import annotations

from hypothesis import strategies as st

from gateway.ems import BatteryState, Plan, Preferences
from gateway.flex_plan import FlexJob
from gateway.plan import BATTERY, GridCaps, MarketOutlook, Problem, Vehicle
from protocols.clearing import Side
from protocols.messages import Step

PREFS = Preferences(min_sell_price=120, max_buy_price=250, reserve_pct=20, soc_max_pct=95)


def batteries(*, capacity_wh: int = 20_000, power_w: int = 8_000) -> st.SearchStrategy[
        BatteryState]:
    return st.builds(
        BatteryState,
        capacity_wh=st.integers(0, capacity_wh),
        soc_pct=st.floats(0, 100),
        max_charge_w=st.integers(0, power_w),
        max_discharge_w=st.integers(0, power_w),
        charge_efficiency=st.floats(0.8, 1.0),
        discharge_efficiency=st.floats(0.8, 1.0),
    )


@st.composite
def problems(draw: st.DrawFn, *, max_steps: int = 24, prices: tuple[int, int] = (-200, 600)
             ) -> Problem:
    steps = draw(st.integers(1, max_steps))
    step_s = draw(st.sampled_from([300.0, 900.0, 3600.0]))
    horizon = steps * step_s
    series = st.lists(st.integers(0, 5_000), min_size=steps, max_size=steps)
    imports = draw(st.lists(st.integers(*prices), min_size=steps, max_size=steps))
    spreads = draw(st.lists(st.integers(0, 400), min_size=steps, max_size=steps))
    exports = [i - s for i, s in zip(imports, spreads, strict=True)]
    if prices[0] >= 0:  # no negative price anywhere
        exports = [max(0, e) for e in exports]
    market = None
    if draw(st.booleans()):
        market = MarketOutlook(
            price=tuple(draw(st.integers(e, i)) for i, e in zip(imports, exports, strict=True)),
            buy_wh=tuple(draw(series)), sell_wh=tuple(draw(series)))
    jobs = tuple(
        FlexJob(name=f"load-{n}", need_wh=draw(st.integers(0, 6_000)),
                max_w=draw(st.integers(0, 4_000)), due_s=draw(st.floats(0, 2 * horizon)))
        for n in range(draw(st.integers(0, 2))))
    vehicle = None
    if draw(st.booleans()):
        vehicle = Vehicle(
            name="ev", battery=draw(batteries(capacity_wh=80_000, power_w=11_000)),
            target_soc_pct=draw(st.floats(0, 100)),
            ready_by_s=draw(st.none() | st.floats(0, 2 * horizon)),
            departs_s=draw(st.none() | st.floats(0, 2 * horizon)),
            v2g_min_soc_pct=draw(st.none() | st.floats(0, 100)))
    caps = None
    if draw(st.booleans()):
        optional = st.none() | st.integers(0, 6_000)
        caps = GridCaps(
            import_wh=tuple(draw(st.lists(optional, min_size=steps, max_size=steps))),
            export_wh=tuple(draw(st.lists(optional, min_size=steps, max_size=steps))),
            dimmed_wh=tuple(draw(st.lists(optional, min_size=steps, max_size=steps))))
    names = [BATTERY, *(j.name for j in jobs), *(["ev"] if vehicle else [])]
    reserve = draw(st.floats(0, 100))
    return Problem(
        step_s=step_s, pv_wh=tuple(draw(series)), load_wh=tuple(draw(series)),
        import_price=tuple(imports), export_price=tuple(exports),
        prefs=Preferences(min_sell_price=draw(st.integers(0, 400)),
                          max_buy_price=draw(st.integers(0, 400)), reserve_pct=reserve,
                          soc_max_pct=draw(st.floats(0, 100))),
        battery=draw(st.none() | batteries()), jobs=jobs, vehicle=vehicle, market=market,
        grid=caps, pv_max_w=draw(st.none() | st.integers(0, 10_000)),
        stale=frozenset(draw(st.sets(st.sampled_from(names)))),
        wear_price=draw(st.integers(0, 50)))


@st.composite
def offers(draw: st.DrawFn) -> Plan:
    """A plan's offer of one to eight steps on either side, best first (a seller's cheapest,
    a buyer's dearest), as the trader bids it."""
    side: Side = draw(st.sampled_from(["sell", "buy"]))
    prices = sorted(draw(st.lists(st.integers(1, 400), min_size=1, max_size=8, unique=True)),
                    reverse=side == "buy")
    steps = tuple(Step(draw(st.integers(1, 3_000)), price) for price in prices)
    energy = sum(step.wh for step in steps)
    return Plan(pv_wh=0, load_wh=0, battery_wh=0, residual_wh=0, side=side, energy_wh=energy,
                limit_price=steps[0].price, steps=steps if len(steps) > 1 else ())

