"""What the conformance checks know about each device role, and the simulated bench.

The setpoints a role must take are the ones gridpeer's drivers write (``gateway/devices``): the
battery's storage controls (124), the PV inverter's output limit and power setpoint (704), the
DC-DC converter's vendor control model (64200). Values are chosen from the device's own limits
and scale factors as read, so the same plan fits a commercial device whose scaling differs from
our firmware's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.devices import (
    Battery,
    ControllableLoad,
    DcDcConverter,
    DiscoveredDevice,
    ModbusBus,
    ModelData,
    PvInverter,
    read_models,
)
from gateway.devices.dcdc import ConverterState
from sim_devices.dcbus import ConverterSpec, DcBusSpec
from sim_devices.home import HomeSpec
from sim_devices.world import World

ROLES = ("meter", "pv", "battery", "dcdc", "load")
CONTROLLED = ("pv", "battery", "dcdc", "load")
CONTROL_MODEL = {"battery": 124, "pv": 704, "dcdc": 64200, "load": 64220}
SIM_DEVICE = {"load": "flex"}
"""The simulated home serves its controllable load (role "load") as device "flex"."""
_METER_MODELS = (201, 202, 203, 204)


@dataclass(frozen=True, slots=True)
class DeviceUnderTest:
    """A discovered device with an open bus and a clock in *device* seconds.

    ``now_s`` is the clock the device's revert timers run on (the simulated world's, or the wall
    clock for a real device); ``resolution_s`` how coarsely that clock ticks on the device.
    """

    role: str
    bus: ModbusBus
    device: DiscoveredDevice
    revert_s: int
    now_s: Callable[[], float]
    resolution_s: float
    real_per_device_s: float
    simulated: bool

    @property
    def unit(self) -> int:
        return self.device.unit

    async def control(self) -> ModelData:
        """The role's control model as the device holds it now."""
        (location,) = self.device.require(driver="hil", model_ids=(CONTROL_MODEL[self.role],))
        return (await read_models(self.bus, unit=self.unit, locations=(location,)))[
            location.model_id]


def role_of(device: DiscoveredDevice) -> str:
    """The role a device plays, from its SunSpec models: its control model decides."""
    models = set(device.models)
    for role, model in CONTROL_MODEL.items():
        if model in models:
            return role
    if models & set(_METER_MODELS):
        return "meter"
    raise AssertionError(f"device has none of the models of a gridpeer role: {sorted(models)}")


def sim_world(*, speed: float) -> World:
    """One home with a device of every role (the converter on a DC bus), served for the
    checks."""
    home = HomeSpec(name="hil", pv_peak_w=5000, base_load_w=400, soc_start_pct=50,
                    flex_w=2000, flex_wh=3000, dcdc=ConverterSpec(max_a=20))
    return World(homes=[home], seed=8, speed=speed, start_s=12 * 3600, dc_bus=DcBusSpec())


def setpoint_plan(role: str, control: ModelData, revert_s: int) -> list[tuple[str, float]]:
    """Every setpoint of ``role`` with a value the device must accept, in a safe write order
    (revert time before what it arms; limits before the values checked against them)."""
    if role == "battery":
        return [("InOutWRte_RvrtTms", revert_s), ("InOutWRte_WinTms", 3),
                ("InOutWRte_RmpTms", 4), ("OutWRte", 10.0), ("InWRte", 25.0),
                ("StorCtl_Mod", 1)]
    if role == "pv":
        return [("WMaxLimPctRvrtTms", revert_s), ("WMaxLimPctRvrt", 100.0),
                ("WMaxLimPctEnaRvrt", 0), ("WMaxLimPct", 50.0), ("WMaxLimPctEna", 1),
                ("WSetRvrtTms", revert_s), ("WSetRvrt", 0), ("WSetEnaRvrt", 0),
                ("WSetMod", 1), ("WSet", 1000), ("WSetEna", 1)]
    if role == "dcdc":
        a_max, v_min, v_max = (control.number(n) for n in ("AMax", "VMin", "VMax"))
        low, high = v_min + 1, v_max - 1
        return [("RvrtTms", revert_s), ("AMax", a_max // 2), ("VMax", high), ("VMin", low),
                ("VSet", round((low + high) / 2)), ("ASet", a_max // 4),
                ("Mode", int(ConverterState.CV))]
    if role == "load":
        return [("RvrtTms", revert_s), ("WLim", control.number("WMax") // 2)]
    raise AssertionError(f"no setpoints for role {role}")


def invalid_value(role: str, control: ModelData) -> tuple[str, float]:
    """A value for a writable setpoint that no device of ``role`` can accept."""
    if role == "load":
        return "WLim", control.number("WMax") + 1  # more than the load can draw
    return {
        "battery": ("InWRte", 200.0),  # 200 % of the charge limit
        "pv": ("WMaxLimPct", 250.0),  # 250 % of the rating
        "dcdc": ("Mode", 99),  # no such converter mode
    }[role]


@dataclass(frozen=True, slots=True)
class Command:
    """One driver command with a revert time, and how to tell from a reading that it holds."""

    apply: Callable[[], object]
    held: Callable[[], object]


def driver_command(dut: DeviceUnderTest) -> Command:
    """A real (non-idle) command through the gateway's own driver, and its 'is it on' check."""
    if dut.role == "battery":
        battery = Battery(bus=dut.bus, device=dut.device)

        async def apply_battery() -> None:
            reading = await battery.read()
            await battery.set_power(watts=reading.max_charge_w // 2, revert_s=dut.revert_s)

        async def battery_held() -> bool:
            return (await battery.read()).setpoint_w != 0

        return Command(apply_battery, battery_held)
    if dut.role == "pv":
        pv = PvInverter(bus=dut.bus, device=dut.device)

        async def apply_pv() -> None:
            await pv.set_limit(pct=40, revert_s=dut.revert_s)

        async def pv_held() -> bool:
            return (await pv.read()).limit_pct is not None

        return Command(apply_pv, pv_held)
    if dut.role == "load":
        load = ControllableLoad(bus=dut.bus, device=dut.device)

        async def apply_load() -> None:
            reading = await load.read()
            await load.set_limit(watts=reading.max_w // 2, revert_s=dut.revert_s)

        async def load_held() -> bool:
            return (await load.read()).limited

        return Command(apply_load, load_held)
    converter = DcDcConverter(bus=dut.bus, device=dut.device)

    async def apply_dcdc() -> None:
        reading = await converter.read()
        volts = (reading.bus_voltage_min_v + reading.bus_voltage_max_v) / 2
        await converter.hold_voltage(volts=round(volts), revert_s=dut.revert_s)

    async def dcdc_held() -> bool:
        return (await converter.read()).state is not ConverterState.WAIT

    return Command(apply_dcdc, dcdc_held)
