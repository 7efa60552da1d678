"""The home's DC-DC converter: the bus side of the cleared position, one command per control step.

The rules are in :mod:`gateway.home.dc_dispatch` (pure); this is the part that polls, commands,
counts and remembers. The converter is polled here, right before each command, rather than by a
free-running poller: the power read is then the current the last command set, which held from
that command's write until this one's, and that is the span it is integrated over (``delivered``,
and what settles the interval's delivery over the bus): up to the sample before the command, the
rest once the command is written. Counting from sample to sample instead would charge the new
current for the time the write took, on a busy host most of a control period. Every command,
WAIT included, carries the revert time; a trip holds the converter in WAIT until its interval
ends.

A converter not in the home (absent at start, or answering with a map we cannot drive) is neither
polled nor commanded: its adoption (``Device.run``) tries it, logs each new reason and counts the
tries, so a control step does not repeat that as a failed poll and a failed write every period.
The home is in safe mode meanwhile, the reason saying why.
"""

from __future__ import annotations

import logging

from gateway.aio import raise_if_cancelling
from gateway.clock import Clock
from gateway.devices import BatteryReading, DcDcConverter, DcDcReading, MeterReading
from gateway.devices.errors import DeviceError
from gateway.dispatch import IntervalTarget
from gateway.envelope import BatteryEnvelope, ConverterEnvelope
from gateway.home.dc_dispatch import (
    BusEnergy,
    ConverterCommand,
    DcTarget,
    aim,
    command_converter,
    meter_target_over_bus,
)
from gateway.home.devices import Device
from gateway.home.records import IntervalRecord, NodeState
from gateway.home.status import ConverterStatus
from protocols.market import Timing

log = logging.getLogger(__name__)


class DcLink:
    """Drives one converter on the community's DC bus (as its master when ``master``)."""

    def __init__(
        self, *, node: str, device: Device[DcDcConverter, DcDcReading], master: bool,
        bus_voltage_v: float, envelope: ConverterEnvelope, battery_envelope: BatteryEnvelope,
        state: NodeState, timing: Timing, clock: Clock, revert_s: int,
    ) -> None:
        self.node = node
        self.device = device
        self.master = master
        """Whether this node's converter holds the DC bus (every member's config names it)."""
        self._bus_voltage_v = bus_voltage_v
        self._envelope = envelope
        self._battery_envelope = battery_envelope
        self._state = state
        self._timing = timing
        self._clock = clock
        self._revert_s = revert_s
        self._energy = BusEnergy()
        self._trip: tuple[int, str] | None = None  # (interval, why): WAIT until it ends

    async def step(self, k: int, period_ms: int, record: IntervalRecord,
                   meter: MeterReading | None, battery: BatteryReading | None,
                   battery_envelope: BatteryEnvelope | None) -> ConverterCommand:
        """Poll and command the converter for this control period of interval ``k``.
        ``battery_envelope`` is the battery's own (None while the battery is stale)."""
        if not self.device.adopted:
            return self._absent()
        reading = await self.device.poller.poll_once()
        # The step's own clock may be a while ago on a busy host: the sample's time is now.
        sampled_ms = self._clock.now_ms()
        if record.dc_start_wh is None:
            record.dc_start_wh = self._energy.wh
        self._energy.add(reading, sampled_ms)
        latched = self._trip[1] if self._trip and self._trip[0] == k else ""
        target, delivered_wh, remaining_s, reason = self._aim(k, sampled_ms, period_ms, meter)
        command = command_converter(
            master=self.master, target=target, remaining_s=remaining_s,
            delivered_wh=delivered_wh, reading=reading,
            soc_pct=None if battery is None else battery.soc_pct, envelope=self._envelope,
            battery=self._battery_envelope if battery_envelope is None else battery_envelope,
            bus_setpoint_v=self._bus_voltage_v, dt_s=period_ms / 1000,
            length_s=self._timing.length_ms / 1000, latched_trip=latched,
            safe_reason=reason,
        )
        if command.trip and not latched:
            self._trip = (k, command.trip)
            log.warning("%s: %s; every converter waits until interval %d ends", self.node,
                        command.safe_reason, k)
        command = await self._write(command)
        self._energy.add(reading, self._clock.now_ms())  # the old current ran until now
        previous = self._state.converter
        if previous is None or (previous.mode, previous.reason) != (command.mode, command.reason):
            log.info("%s: converter %s (%s)", self.node, command.mode.upper(), command.reason)
        self._state.converter = command
        return command

    def _absent(self) -> ConverterCommand:
        """WAIT, unwritten, the home safe: the converter is not in the home."""
        why = f"converter not in the home: {self.device.adoption.reason or 'not adopted yet'}"
        command = ConverterCommand(mode="wait", reason=why, safe_reason=why)
        if self._state.converter != command:
            log.info("%s: converter WAIT (%s)", self.node, why)
        self._state.converter = command
        return command

    async def _write(self, command: ConverterCommand) -> ConverterCommand:
        """``command`` as written, or WAIT (the home then safe too) when it could not be."""
        driver = self.device.driver
        try:
            if command.mode == "cc":
                await driver.set_current(amps=command.current_a, revert_s=self._revert_s)
            elif command.mode == "cv":
                await driver.hold_voltage(volts=command.voltage_v, revert_s=self._revert_s,
                                          limit_a=command.limit_a)
            else:
                await driver.wait(revert_s=self._revert_s)
        except (DeviceError, ValueError) as exc:
            log.warning("%s: converter %s not written: %s", self.node, command.mode, exc)
            return ConverterCommand(mode="wait", reason=f"command not written: {exc}",
                                    safe_reason=f"converter command not written: {exc}")
        return command

    def _aim(self, k: int, now_ms: int, period_ms: int, meter: MeterReading | None
             ) -> tuple[DcTarget | None, float, float, str]:
        """The position the current commanded now counts towards (``dc_dispatch.aim``), the
        energy already counted towards it, the time left to count, and why there is no
        position (if so)."""
        start = self._state.record(k).dc_start_wh
        where = aim(k=k, now_ms=now_ms, period_ms=period_ms,
                    next_start_ms=self._timing.start_ms(k + 1), length_ms=self._timing.length_ms,
                    counted_wh=None if start is None else self._energy.wh - start)
        aimed = self._state.record(where.interval)
        target, reason = aimed.target(meter, length_s=self._timing.length_ms / 1000)
        position = None if target is None else DcTarget(energy_wh=aimed.cleared_wh())
        return position, where.delivered_wh, where.remaining_s, reason

    def meter_target(self, target: IntervalTarget | None, reason: str, record: IntervalRecord,
                     command: ConverterCommand) -> tuple[IntervalTarget | None, str]:
        """The battery's meter target for ``record`` with the bus carrying the trade."""
        traded = record.cleared_wh() if target is not None else 0
        return meter_target_over_bus(target, reason, traded_wh=traded, command=command)

    def delivered_wh(self, record: IntervalRecord) -> int:
        """Energy the converter moved over the bus in ``record``'s interval so far, at the bus
        side (+ drawn into the home): the DC part of the delivery to settle, beside the meter's.
        Up to the last control step, like the meter's reading that closes the interval."""
        if record.dc_start_wh is None:
            return 0
        return round(self._energy.wh - record.dc_start_wh)

    def port_w(self) -> int | None:
        """What the converter's port takes of the battery's cells now (+ charging), None when
        no command or reading says."""
        command, reading = self._state.converter, self.device.fresh()
        if command is None or reading is None:
            return None
        return {"cc": round(command.current_a * reading.bus_voltage_v),
                "cv": reading.power_w}.get(command.mode, 0)

    async def go_safe(self, reason: str) -> None:
        """WAIT with the revert time, now. Best effort: a write that fails is logged, and the
        revert timer of the last command written still holds."""
        if not self.device.adopted:  # nothing to write to; nothing written before either
            self._state.converter = ConverterCommand(mode="wait", reason=reason,
                                                     safe_reason=reason)
            return
        try:
            await self.device.driver.wait(revert_s=self._revert_s)
            self._state.converter = ConverterCommand(mode="wait", reason=reason,
                                                     safe_reason=reason)
        except Exception as exc:
            raise_if_cancelling(exc)
            log.warning("%s: converter not set to WAIT: %s", self.node, exc)

    def status(self) -> ConverterStatus | None:
        """The converter as the owner sees it; None before its first command."""
        command, reading = self._state.converter, self.device.fresh()
        if command is None:
            return None
        return ConverterStatus(
            role="master" if self.master else "member", mode=command.mode,
            current_a=command.current_a, voltage_v=command.voltage_v, reason=command.reason,
            limits=command.limits, bus_v=None if reading is None else reading.bus_voltage_v,
            measured_a=None if reading is None else reading.current_a)
