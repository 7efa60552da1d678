"""The battery controller: one setpoint per control period, from the agreed outcome or safe mode.

The market agreed on energy at the meter, so the controller steers the battery to make the meter
follow the cleared position (:func:`gateway.dispatch.decide`), inside the envelope the installer
set, narrowed by what the battery itself reports, by the owner's reserve and, on a DC bus, by what
the converter's port takes of the same cells. A report that leaves nothing to work with holds the
battery idle (logged once, counted in ``device_holds``); a stale battery is left to its revert
timer. It also feeds the forecaster the home's own load, measured as meter − battery + PV less
what the plan shifted.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from gateway.aio import raise_if_cancelling
from gateway.clock import Clock
from gateway.devices import Battery, BatteryReading, Meter, MeterReading, PvInverter, PvReading
from gateway.devices.errors import DeviceError
from gateway.dispatch import decide
from gateway.ems import Preferences
from gateway.envelope import BatteryEnvelope
from gateway.forecast import DAY_S, HomeForecaster
from gateway.home.dc_link import DcLink
from gateway.home.devices import Device
from gateway.home.events import HomeEvent, SetpointWritten
from gateway.home.grid_point import meter_floor_w
from gateway.home.records import NodeState
from gateway.plan import GridLimits
from protocols.market import Timing

log = logging.getLogger(__name__)


def battery_w_of(battery: BatteryReading) -> int:
    """The battery's power (+ charge): measured, or what it holds when it does not measure it
    (713 without 802)."""
    return battery.setpoint_w if battery.power_w is None else battery.power_w

FULL_MARGIN_PCT = 0.5
"""A battery this close to its top is taken as full: cells near it refuse what is still allowed."""


def is_full(*, soc_pct: float, top_pct: float, capacity_wh: int | None, held: bool) -> bool:
    """Whether the battery takes no charge: near its top (within ``FULL_MARGIN_PCT``), held, or
    not reporting its SoC or capacity."""
    return not soc_pct < top_pct - FULL_MARGIN_PCT or held or not capacity_wh


def lasting_w(*, soc_pct: float, top_pct: float, capacity_wh: int | None, written_w: int,
              held: bool, period_ms: int) -> int:
    """Of a charging setpoint (W), what the cells can take over the whole coming period (none
    when :func:`is_full`); a discharging or idle setpoint as it is."""
    if written_w <= 0:
        return written_w
    if is_full(soc_pct=soc_pct, top_pct=top_pct, capacity_wh=capacity_wh, held=held):
        return 0
    room_wh = (top_pct - FULL_MARGIN_PCT - soc_pct) / 100 * (capacity_wh or 0)
    return min(written_w, math.floor(room_wh * 3_600_000 / period_ms + 1e-6))


def charge_outlook(*, soc_pct: float, top_pct: float, capacity_wh: int | None, written_w: int,
                   battery_w: int, max_charge_w: int, held: bool, period_ms: int
                   ) -> tuple[int, int]:
    """(change, room) in W for the PV guard (:mod:`gateway.home.grid_point`): how much more the
    battery will charge than it does now, counting of a charging setpoint only what the cells
    can take over the whole coming period (:func:`lasting_w`: a battery that fills halfway
    would export the rest), and how much more than the setpoint it could charge (none when
    :func:`is_full`)."""
    lasting = lasting_w(soc_pct=soc_pct, top_pct=top_pct, capacity_wh=capacity_wh,
                        written_w=written_w, held=held, period_ms=period_ms)
    full = is_full(soc_pct=soc_pct, top_pct=top_pct, capacity_wh=capacity_wh, held=held)
    return lasting - battery_w, 0 if full else max(0, max_charge_w - written_w)


def device_envelope(envelope: BatteryEnvelope, battery: BatteryReading) -> BatteryEnvelope:
    """``envelope`` narrowed by what ``battery`` reports of itself (never widened)."""
    return envelope.within_device(
        max_charge_w=battery.max_charge_w, max_discharge_w=battery.max_discharge_w,
        soc_min_pct=battery.soc_min_pct, soc_max_pct=battery.soc_max_pct,
    )


class BatteryController:
    """Writes the battery's setpoint each control period (and commands the DC link first)."""

    def __init__(
        self, *, node: str, battery: Device[Battery, BatteryReading],
        meter: Device[Meter, MeterReading] | None, pv: Device[PvInverter, PvReading] | None,
        dc: DcLink | None, envelope: BatteryEnvelope, headroom_pct: float,
        prefs: Callable[[], Preferences], forecaster: HomeForecaster,
        shifted_w: Callable[[], int], state: NodeState, timing: Timing, clock: Clock,
        revert_s: int, on_event: Callable[[HomeEvent], None], limits: GridLimits | None = None,
    ) -> None:
        self.node = node
        self.battery = battery
        self._meter, self._pv, self._dc = meter, pv, dc
        self.envelope = envelope
        self._headroom_pct = headroom_pct
        self._prefs = prefs
        self._forecaster = forecaster
        self._shifted_w = shifted_w
        self._state = state
        self._timing = timing
        self._clock = clock
        self._revert_s = revert_s
        self._on_event = on_event
        self._limits = limits
        #: The last setpoint written less the battery's power before it (+ more charging).
        self.change_w = 0
        #: How much more than the last setpoint the battery could charge (0: full, or held).
        self.room_w = 0
        #: Times the battery's own report held it idle, by device name.
        self.holds: Counter[str] = Counter()
        self._held = ""  # why the battery's report holds it idle now ("" if not)

    async def step(self, k: int, now_ms: int, period_ms: int, *, pv_rise_w: int = 0,
                   pv_capped: bool = False) -> None:
        """One control period of interval ``k``: the converter's command, then the battery's.
        ``pv_rise_w`` is how much more PV the grid-point guard lets through this period: the
        setpoint is chosen for the meter as it will be once that PV flows. ``pv_capped``: the
        inverter's reading is what the guard's cap lets through, not what the sun gives, so the
        forecast does not learn it as the sun (a zero-export home would learn less sun each day
        and buy to fill a battery its own sun fills)."""
        self.change_w = self.room_w = 0  # nothing to count on unless a setpoint is written
        meter = None if self._meter is None else self._meter.fresh()
        battery = self.battery.fresh()
        pv = None if self._pv is None else self._pv.fresh()
        record = self._state.record(k)
        dc = None
        if self._dc is not None:
            dc = await self._dc.step(
                k, period_ms, record, meter, battery,
                None if battery is None else device_envelope(self.envelope, battery))
        if battery is None:
            self._state.safe_reason = "battery stale: its revert timer returns it to idle"
            return
        envelope = self.ac_envelope(battery)
        refused = self.battery.refused  # its map cannot carry the setpoint: not asked again
        held = envelope.held or ("" if refused is None else f"not commandable ({refused})")
        self._note_hold(held)
        battery_w = battery_w_of(battery)
        if meter is not None:
            pv_w = -pv.power_w if pv is not None else 0
            self._forecaster.observe(
                time_of_day_s=now_ms / 1000 % DAY_S, pv_w=None if pv_capped else pv_w,
                load_w=meter.power_w - battery_w + pv_w - self._shifted_w(),
            )
            net_wh = meter.import_wh - meter.export_wh
            if record.meter_start_wh is None:
                record.meter_start_wh = net_wh
        target, reason = record.target(meter, length_s=self._timing.length_ms / 1000)
        if self._dc is not None and dc is not None:
            target, reason = self._dc.meter_target(target, reason, record, dc)
        if held:
            target, reason = None, f"battery held idle: {held}"
        elapsed_s = (now_ms - self._timing.start_ms(k)) / 1000
        decision = decide(
            target=target, elapsed_s=elapsed_s,
            metered_wh=0.0 if meter is None or record.meter_start_wh is None
            else meter.import_wh - meter.export_wh - record.meter_start_wh,
            meter_w=meter.power_w - pv_rise_w if meter is not None else battery_w,
            battery_w=battery_w, soc_pct=battery.soc_pct,
            previous_w=self._state.setpoint_w, dt_s=period_ms / 1000,
            envelope=envelope, safe_reason=reason, **self._meter_window(),
        )
        if refused is not None:
            self._state.safe_reason = f"battery held idle: {held}"
            return
        setpoint = decision.setpoint_w
        if self._limits is not None and self._limits.export_w is not None:
            # Under an export limit, a charge the cells could not hold until the next period is
            # spread over it: cells that fill halfway would send the PV they took to the grid.
            setpoint = lasting_w(soc_pct=battery.soc_pct, top_pct=envelope.soc_max_pct,
                                 capacity_wh=battery.capacity_wh, written_w=setpoint,
                                 held=bool(envelope.held), period_ms=period_ms)
        try:
            written = await self.battery.driver.set_power(watts=setpoint,
                                                          revert_s=self._revert_s)
        except (DeviceError, ValueError) as exc:
            log.warning("%s: battery setpoint not written: %s", self.node, exc)
            return
        self._state.setpoint_w = written
        self._note_room(battery, envelope, written, period_ms)
        self._state.safe_reason = "" if decision.mode == "market" else decision.reason
        first = record.last_decision is None
        record.last_decision = decision
        if first:
            self._on_event(SetpointWritten(
                node=self.node, interval=k, decision=decision, soc_pct=battery.soc_pct))

    def _note_room(self, battery: BatteryReading, envelope: BatteryEnvelope, written: int,
                   period_ms: int) -> None:
        """What the PV guard may count on (:func:`charge_outlook`)."""
        self.change_w, self.room_w = charge_outlook(
            soc_pct=battery.soc_pct, top_pct=envelope.soc_max_pct,
            capacity_wh=battery.capacity_wh, written_w=written, battery_w=battery_w_of(battery),
            max_charge_w=envelope.max_charge_w, held=bool(envelope.held), period_ms=period_ms)

    def _meter_window(self) -> dict[str, float | None]:
        """The grid operator's export and import limits as the meter's floor and ceiling (W),
        the export limit less the PV guard's margin (:mod:`gateway.home.grid_point`)."""
        limits = self._limits
        if limits is None:
            return {}
        export = limits.export_w
        return {"meter_floor_w": None if export is None else meter_floor_w(export),
                "meter_ceiling_w": None if limits.import_w is None else float(limits.import_w)}

    def ac_envelope(self, battery: BatteryReading) -> BatteryEnvelope:
        """The battery inverter's envelope: the device's, less what the converter's port takes
        of the same cells; the bus master also keeps its SoC off the window's edges, so its
        converter can always absorb the bus's residual both ways."""
        env = device_envelope(self.envelope, battery)
        headroom = self._headroom_pct
        if env.soc_max_pct - env.soc_min_pct > 2 * headroom + 1:
            env = replace(env, soc_min_pct=env.soc_min_pct + headroom,
                          soc_max_pct=env.soc_max_pct - headroom)
        # The owner's reserve holds in every mode, safe mode included: kept for a power cut, it
        # is not there for everyday self-consumption either (and a no-market baseline that
        # could use it while the market could not would not be a fair comparison).
        reserve = self._prefs().reserve_pct
        if env.soc_min_pct < reserve < env.soc_max_pct:
            env = replace(env, soc_min_pct=reserve)
        port_w = None if self._dc is None else self._dc.port_w()
        return env if port_w is None else env.beside(port_w)

    def _note_hold(self, held: str) -> None:
        """Log and count each time the battery's own report starts holding it idle, and say when
        it lets go again."""
        if held == self._held:
            return
        name = self.battery.name
        if held:
            self.holds[name] += 1
            log.warning("%s: %s held idle: %s", self.node, name, held)
        else:
            log.info("%s: %s released: its report leaves a window to work in again", self.node,
                     name)
        self._held = held

    async def go_safe(self) -> None:
        """Idle with the revert time, now. Best effort: a write that fails is logged, and the
        revert timer of the last setpoint written still holds. A battery whose map cannot carry
        the setpoint is not asked."""
        if self.battery.refused is not None:
            return
        try:
            self._state.setpoint_w = await self.battery.driver.set_power(
                watts=0, revert_s=self._revert_s)
        except Exception as exc:
            raise_if_cancelling(exc)
            log.warning("%s: battery not set idle: %s", self.node, exc)
