"""A simulated community on a simulated clock: homes, their devices, and the loop that steps them.

Each home's meter, PV inverter and battery is a real device as far as a gateway can tell: a
``RegisterBank`` with the role's SunSpec map, filled by the firmware's own role code, which reads
the physics through the fake HAL. Each meter tags its readings (vendor model 64210) with a key
derived from the world's seed and its device id (``sim_meter_key``), as a flashed meter would
with the key ``gridpeer flash`` gave it. One world step is:

1. set every device clock to the new time; role code reverts expired setpoints (``tick``);
2. physics follows what the role code commanded through the HAL (battery power, PV limit,
   the controllable loads' power limits);
3. the physics results go back into the HAL; role code publishes them into registers.

A home with an EV (``HomeSpec.ev``) serves its charger as device "ev", a home with a flexible load
serves that appliance as device "flex": both are role "load" (vendor model 64220), which say what
they still need by when and follow a gateway's power limit until it reverts.

Homes with a DC-DC converter share one DC bus (``World(dc_bus=DcBusSpec(...))``). Their
converters are served as role "dcdc" and run the firmware's converter role; each step, after the
roles' reversion and before the homes' AC physics, the bus physics (``sim_devices/dcbus.py``)
moves energy between the homes' batteries through the bus, and the converters then read back the
bus voltage, their current and the bus protection's trip.

The world steps in fixed ``dt_ms`` increments of simulated time, so a run is reproducible from its
seed and does not depend on how fast the host is; ``serve`` only decides *when* (in real time) the
next steps happen, from ``speed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass

from firmware.hal.fake import (
    FakeBatteryStage,
    FakeClock,
    FakeDcStage,
    FakeLoadStage,
    FakeMeterIC,
    FakePvStage,
)
from firmware.metering import TaggedCounter
from firmware.modbus.bank import RegisterBank
from firmware.roles.battery import BatteryRole
from firmware.roles.common import Points
from firmware.roles.dcdc import DcdcRole
from firmware.roles.load import APPLIANCE, EVSE, LoadRole
from firmware.roles.meter import MeterRole
from firmware.roles.pv import PvRole
from protocols.sunspec.devices import DeviceMap
from sim_devices.dcbus import (
    BusState,
    ConverterFlow,
    DcBusSpec,
    StageCommand,
    bus_initial,
    bus_step,
)
from sim_devices.ev import ev_need_mj
from sim_devices.faults import FaultSpec
from sim_devices.home import (
    HomeProfiles,
    HomeSpec,
    HomeState,
    home_dc_step,
    home_initial,
    home_step,
    port_bounds,
)
from sim_devices.physics import MJ_PER_WH, PhysicsError, flex_in_window

ROLES = ("meter", "pv", "battery")
"""The devices every home has; a home with ``HomeSpec.dcdc`` also has a "dcdc" converter."""
LOADS = ("ev", "flex")
"""Controllable loads (role "load", vendor model 64220): "ev", the charger of a home with
``HomeSpec.ev``; "flex", the appliance of a home with a flexible load (``flex_wh`` > 0)."""


def device_keys(spec: HomeSpec) -> tuple[str, ...]:
    """The names of a home's devices: its roles, and its loads by what they are."""
    return (ROLES + (("dcdc",) if spec.dcdc is not None else ())
            + (("ev",) if spec.ev is not None else ()) + (("flex",) if spec.flex_wh else ()))


def _minute_of_day(hour: float) -> int:
    return round(hour * 60) % 1440
_NOMINAL_V_X10 = 2300
_BATTERY_V_X10 = 500


def point_table(device_map: DeviceMap) -> dict[int, tuple[int, dict[str, tuple[int, str, int]]]]:
    """The firmware role code's point table for a role, from the protocol's layout."""
    return {
        block.model_id: (block.address,
                         {p.name: (p.offset, p.type, p.size) for p in model.points})
        for block, model in zip(device_map.blocks, device_map.models, strict=True)
    }


def sim_meter_key(world_seed: int, device_id: str) -> bytes:
    """The HMAC key a simulated meter tags its readings with, as ``gridpeer flash`` would have
    provisioned one: per device, and reproducible from the world's seed so a run's provisioning
    can hand each gateway its meter's key without a flash step (``Home.meter_key``)."""
    seed_text = f"gridpeer/sim-meter-key/1\n{world_seed}\n{device_id}"
    return hashlib.sha256(seed_text.encode()).digest()


class SimulatedDevice:
    """One simulated device: its register bank (what is served), role code and fake HAL."""

    def __init__(self, *, role: str, home: str, faults: FaultSpec | None,
                 key: str | None = None) -> None:
        self.role = role
        self.name = f"{home}/{key or role}"
        self.map = DeviceMap.for_role(role)
        self.bank = RegisterBank(self.map.base, self.map.size)
        for addr, value in self.map.fixed_registers().items():
            self.bank.set(addr, value)
        self.points = Points(self.bank, point_table(self.map))
        self.faults = faults


@dataclass(frozen=True, slots=True)
class BatteryTruth:
    """Ground truth of a battery for tests: SoC, terminal power (+ = charge), command."""

    soc_pct: float
    power_w: int
    stored_wh: float
    command_w: int


@dataclass(frozen=True, slots=True)
class PvTruth:
    """Ground truth of a PV inverter for tests: output, what the sun offers, the limit set."""

    power_w: int
    available_w: int
    limit_w: int | None


@dataclass(frozen=True, slots=True)
class BusTruth:
    """Ground truth of the DC bus for tests."""

    voltage_v: float
    tripped: bool
    state: BusState
    low_v: float
    high_v: float
    """The lowest and highest voltage the bus ended any step at since the world started."""


class DcPortMeter:
    """The converter's local-port meter (the role's ``port``): the simulator writes it."""

    def __init__(self) -> None:
        self.w = 0
        self.v_x10 = _BATTERY_V_X10
        self.a_x100 = 0

    def sample(self) -> tuple[int, int, int]:
        return self.w, self.v_x10, self.a_x100


@dataclass(frozen=True, slots=True)
class MeterTruth:
    """Ground truth at the grid connection for tests: + = import."""

    power_w: int
    import_wh: int
    export_wh: int


class Home:
    """One home: spec, physics state and its three devices, stepped by the world."""

    def __init__(self, spec: HomeSpec, *, world_seed: int, t_ms: int,
                 faults: Mapping[str, FaultSpec], dc_bus: DcBusSpec | None = None) -> None:
        self.spec = spec
        self._profiles = HomeProfiles(spec, world_seed=world_seed)
        self.state: HomeState = home_initial(spec, t_ms=t_ms)
        self.clock = FakeClock(t_ms)
        self.hal_meter = FakeMeterIC()
        self.hal_pv = FakePvStage()
        self.hal_battery = FakeBatteryStage()
        self.devices = {key: SimulatedDevice(role="load" if key in LOADS else key, key=key,
                                             home=spec.name, faults=faults.get(key))
                        for key in device_keys(spec)}
        self.hal_loads = {key: FakeLoadStage() for key in LOADS if key in self.devices}
        """The controllable loads' stages: ``limit_w`` is what the gateway last allowed."""
        self._write_hal()
        meter_id = f"{spec.name}-meter"
        self.meter_key = sim_meter_key(world_seed, meter_id)
        self.meter_role = MeterRole(self.devices["meter"].points, front_end=self.hal_meter,
                                    serial=meter_id,
                                    tagger=TaggedCounter(self.meter_key, meter_id))
        self.pv_role = PvRole(self.devices["pv"].points, stage=self.hal_pv, clock=self.clock,
                              serial=f"{spec.name}-pv", rating_w=max(1, spec.pv_peak_w))
        self.battery_role = BatteryRole(
            self.devices["battery"].points, stage=self.hal_battery, clock=self.clock,
            serial=f"{spec.name}-battery", capacity_wh=spec.battery_wh,
            max_charge_w=spec.battery_max_w, max_discharge_w=spec.battery_max_w,
            soc_min_pct=spec.soc_min_pct, soc_max_pct=spec.soc_max_pct)
        self.hal_dcdc: FakeDcStage | None = None
        self.dcdc_role: DcdcRole | None = None
        self.dc_flow = ConverterFlow()
        """The converter's flow in the last step (ground truth for tests)."""
        self.dc_bus_mj = 0
        """Energy the converter drew from the bus since the start (− = put onto it): what this
        home exchanged over the bus, at the bus side (ground truth for tests)."""
        self.dc_peak_a = 0.0
        """The largest bus-side current the converter carried in any step, either direction."""
        self.dc_port = DcPortMeter()
        if spec.dcdc is not None:
            if dc_bus is None:
                raise PhysicsError(f"home {spec.name} has a DC-DC converter but the world has "
                                   "no dc_bus")
            self.hal_dcdc = FakeDcStage()
            self.hal_dcdc.bus_v_x10 = dc_bus.nominal_v * 10
            self.dcdc_role = DcdcRole(
                self.devices["dcdc"].points, stage=self.hal_dcdc, clock=self.clock,
                serial=f"{spec.name}-dcdc", rated_a_x100=spec.dcdc.max_a * 100,
                v_nom_x10=dc_bus.nominal_v * 10, v_min_x10=dc_bus.v_min * 10,
                v_max_x10=dc_bus.v_max * 10, port=self.dc_port)
        self.load_roles = {
            key: LoadRole(self.devices[key].points, stage=stage, clock=self.clock,
                          serial=f"{spec.name}-{key}", kind=EVSE if key == "ev" else APPLIANCE,
                          max_w=spec.ev.max_charge_w if key == "ev" and spec.ev else spec.flex_w,
                          max_dis_w=spec.ev.max_discharge_w if key == "ev" and spec.ev else 0)
            for key, stage in self.hal_loads.items()}

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def battery(self) -> BatteryTruth:
        b = self.state.battery
        return BatteryTruth(b.soc_pct(self.spec.battery_spec()), b.power_w,
                            b.stored_mj / MJ_PER_WH, self.hal_battery.command_w)

    @property
    def pv(self) -> PvTruth:
        return PvTruth(self.state.pv.power_w, self.state.pv.available_w, self.hal_pv.limit_w)

    @property
    def meter(self) -> MeterTruth:
        m = self.state.meter
        return MeterTruth(m.power_w, m.import_wh, m.export_wh)

    def dc_command(self) -> StageCommand:
        """What the converter role last commanded its stage; reverts an expired setpoint first."""
        if self.dcdc_role is None or self.hal_dcdc is None:
            raise PhysicsError(f"home {self.name} has no DC-DC converter")
        self.clock.now_ms = self.state.t_ms
        self.dcdc_role.check_revert()
        stage = self.hal_dcdc
        return StageCommand(stage.mode, stage.a_set_x100, stage.v_set_x10)

    def dc_publish(self, *, flow: ConverterFlow, bus_v_x10: int, tripped: bool) -> None:
        """The bus step's result into the converter's HAL, then the role measures and protects."""
        if self.dcdc_role is None or self.hal_dcdc is None:
            raise PhysicsError(f"home {self.name} has no DC-DC converter")
        self.dc_flow = flow
        self.dc_bus_mj += flow.bus_w * flow.on_ms
        self.dc_peak_a = max(self.dc_peak_a, abs(flow.a_x100) / 100)
        stage = self.hal_dcdc
        stage.w, stage.a_x100 = flow.bus_w, flow.a_x100
        stage.bus_v_x10, stage.tripped = bus_v_x10, tripped
        port = self.dc_port
        port.w, port.v_x10 = flow.port_w, _BATTERY_V_X10
        port.a_x100 = flow.port_w * 1000 // _BATTERY_V_X10
        self.dcdc_role.measure()

    def step(self, dt_ms: int, *, dc_flow: ConverterFlow | None = None) -> None:
        """One step of the home; ``dc_flow`` is what the DC bus decided for its converter."""
        self.clock.now_ms = self.state.t_ms
        self.pv_role.tick()
        self.battery_role.tick()
        for load in self.load_roles.values():
            load.tick()
        if dc_flow is not None:
            self.state = home_dc_step(self.spec, self.state, flow=dc_flow)
        loads = self.hal_loads
        self.state = home_step(self.spec, self._profiles, self.state, dt_ms=dt_ms,
                               battery_command_w=self.hal_battery.command_w,
                               pv_limit_w=self.hal_pv.limit_w,
                               ev_limit_w=loads["ev"].limit_w if "ev" in loads else None,
                               ev_discharge_w=loads["ev"].discharge_set_w if "ev" in loads else 0,
                               flex_limit_w=loads["flex"].limit_w if "flex" in loads else None)
        self.clock.now_ms = self.state.t_ms
        self._write_hal()
        self.meter_role.tick()
        self.pv_role.tick()
        self.battery_role.tick()
        for load in self.load_roles.values():
            load.tick()

    def _write_hal(self) -> None:
        s = self.state
        m = self.hal_meter
        m.w, m.v_x10 = s.meter.power_w, _NOMINAL_V_X10
        m.a_x100 = s.meter.power_w * 1000 // _NOMINAL_V_X10
        m.import_wh, m.export_wh = s.meter.import_wh, s.meter.export_wh
        pv = self.hal_pv
        pv.w, pv.v_x10 = s.pv.power_w, _NOMINAL_V_X10
        pv.a_x100 = s.pv.power_w * 1000 // _NOMINAL_V_X10
        pv.injected_wh = s.pv.energy_mj // MJ_PER_WH
        b = self.hal_battery
        b.w, b.v_x10 = s.battery.power_w, _BATTERY_V_X10
        b.a_x100 = s.battery.power_w * 1000 // _BATTERY_V_X10
        b.soc_pct_x100 = s.battery.stored_mj * 10000 // self.spec.battery_spec().capacity_mj
        ev_spec = self.spec.ev
        if "ev" in self.hal_loads and ev_spec is not None and s.ev is not None:
            ev = self.hal_loads["ev"]
            ev.w, ev.connected = max(0, s.ev.power_w), s.ev.plugged
            ev.discharge_w = max(0, -s.ev.power_w)
            ev.soc_x10 = s.ev.stored_mj * 1000 // ev_spec.capacity_mj
            ev.capacity_wh = ev_spec.battery_wh
            ev.need_wh = -(-ev_need_mj(ev_spec, s.ev) // MJ_PER_WH)
            ev.deadline_min = _minute_of_day(ev_spec.departure_h)
            ev.total_wh = s.ev.energy_mj // MJ_PER_WH
        if "flex" in self.hal_loads:
            flex, flex_spec = self.hal_loads["flex"], self.spec.flex_spec()
            flex.w = s.flex.power_w
            flex.connected = s.flex.remaining_mj > 0 and flex_in_window(flex_spec, s.t_ms)
            flex.need_wh = -(-s.flex.remaining_mj // MJ_PER_WH)
            flex.deadline_min = _minute_of_day(flex_spec.deadline_h)
            flex.total_wh = s.flex_mj // MJ_PER_WH


class World:
    """Every home of a community on one simulated clock.

    ``start_s`` is the simulated time (seconds since midnight of day 0) the world starts at;
    ``speed`` is simulated seconds per real second while served; ``dt_ms`` the fixed physics step.
    ``faults`` maps ``(home, role)`` to what goes wrong with that device when served.
    ``dc_bus`` is the DC bus the homes with a converter (``HomeSpec.dcdc``) share.
    """

    def __init__(self, *, homes: Iterable[HomeSpec], seed: int = 0, speed: float = 1.0,
                 start_s: float = 0.0, dt_ms: int = 1000,
                 faults: Mapping[tuple[str, str], FaultSpec] | None = None,
                 dc_bus: DcBusSpec | None = None) -> None:
        specs = list(homes)
        if not specs:
            raise PhysicsError("a world needs at least one home")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise PhysicsError(f"home names must be unique, got {names}")
        if speed <= 0:
            raise PhysicsError(f"speed must be > 0, got {speed}")
        if dt_ms <= 0:
            raise PhysicsError(f"dt_ms must be > 0, got {dt_ms}")
        if start_s < 0:
            raise PhysicsError(f"start_s must be >= 0, got {start_s}")
        if dc_bus is not None and not any(s.dcdc is not None for s in specs):
            raise PhysicsError("a dc_bus needs at least one home with a DC-DC converter "
                               "(HomeSpec.dcdc)")
        faults = dict(faults or {})
        devices = {s.name: device_keys(s) for s in specs}
        unknown = [key for key in faults if key[0] not in names or key[1] not in devices[key[0]]]
        if unknown:
            raise PhysicsError(f"faults name unknown devices {unknown}; roles are {ROLES}, "
                               f"dcdc for homes with a converter and {LOADS} for their loads")
        self.seed = seed
        self.speed = speed
        self.dt_ms = dt_ms
        self._now_ms = round(start_s * 1000)
        self.dc_bus_spec = dc_bus
        self._bus = bus_initial(dc_bus) if dc_bus is not None else None
        nominal_x10 = dc_bus.nominal_v * 10 if dc_bus is not None else 0
        self._bus_range_x10 = (nominal_x10, nominal_x10)
        self._homes = {
            s.name: Home(s, world_seed=seed, t_ms=self._now_ms, dc_bus=dc_bus,
                         faults={role: f for (home, role), f in faults.items() if home == s.name})
            for s in specs}

    @property
    def now_ms(self) -> int:
        return self._now_ms

    @property
    def now_s(self) -> float:
        """Simulated seconds since midnight of day 0."""
        return self._now_ms / 1000

    @property
    def homes(self) -> list[Home]:
        return list(self._homes.values())

    def home(self, name: str) -> Home:
        try:
            return self._homes[name]
        except KeyError:
            raise KeyError(f"no home {name!r}; homes are {sorted(self._homes)}") from None

    @property
    def dc_bus(self) -> BusTruth:
        """The DC bus's voltage, trip and energy counters."""
        if self._bus is None or self.dc_bus_spec is None:
            raise PhysicsError("this world has no dc_bus")
        low, high = self._bus_range_x10
        return BusTruth(self.dc_bus_spec.voltage_x10(self._bus.stored_mj) / 10,
                        self._bus.tripped, self._bus, low / 10, high / 10)

    def step(self) -> None:
        """Advance every home by one ``dt_ms``: the DC bus first, then each home."""
        spec, bus = self.dc_bus_spec, self._bus
        flows: dict[str, ConverterFlow] = {}
        if spec is not None and bus is not None:
            members = {
                home.name: (home.spec.dcdc, home.dc_command(),
                            port_bounds(home.spec, home.state, dt_ms=self.dt_ms))
                for home in self._homes.values() if home.spec.dcdc is not None}
            self._bus, flows = bus_step(spec, bus, converters=members, dt_ms=self.dt_ms)
        for home in self._homes.values():
            home.step(self.dt_ms, dc_flow=flows.get(home.name))
        if spec is not None and self._bus is not None:
            v_x10 = spec.voltage_x10(self._bus.stored_mj)
            low, high = self._bus_range_x10
            self._bus_range_x10 = min(low, v_x10), max(high, v_x10)
            for name, flow in flows.items():
                self._homes[name].dc_publish(flow=flow, bus_v_x10=v_x10,
                                             tripped=self._bus.tripped)
        self._now_ms += self.dt_ms

    def advance(self, seconds: float) -> None:
        """Step until ``seconds`` more of simulated time have passed (whole steps)."""
        target = self._now_ms + round(seconds * 1000)
        while self._now_ms + self.dt_ms <= target:
            self.step()

    @contextlib.asynccontextmanager
    async def serve(self, *, host: str = "127.0.0.1", rtu: bool = False) -> AsyncIterator[Served]:
        """Serve every device over Modbus TCP (and RTU on ptys) while stepping on the sim clock."""
        from sim_devices.serve import serve_rtu_pty, serve_tcp

        async with contextlib.AsyncExitStack() as stack:
            tcp: dict[tuple[str, str], tuple[str, int]] = {}
            ptys: dict[tuple[str, str], str] = {}
            for home in self._homes.values():
                for role, device in home.devices.items():
                    tcp[home.name, role] = await stack.enter_async_context(serve_tcp(
                        device.bank, host=host, faults=device.faults,
                        seed=f"{self.seed}/{device.name}",
                        clock=lambda: self.now_s))
                    if rtu:
                        ptys[home.name, role] = await stack.enter_async_context(serve_rtu_pty(
                            device.bank, faults=device.faults,
                            seed=f"{self.seed}/{device.name}/rtu", clock=lambda: self.now_s))
            stepper = asyncio.create_task(self._run(), name="world-clock")
            try:
                yield Served(tcp, ptys)
            finally:
                stepper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stepper

    async def _run(self) -> None:
        """Keep simulated time at ``speed`` × real time, in whole steps, yielding between batches.

        A batch is capped so a slow host falls behind instead of starving the Modbus servers.
        """
        loop = asyncio.get_running_loop()
        real0, sim0 = loop.time(), self._now_ms
        period = max(0.005, self.dt_ms / 1000 / self.speed)
        while True:
            target = sim0 + (loop.time() - real0) * self.speed * 1000
            for _ in range(1000):
                if self._now_ms + self.dt_ms > target:
                    break
                self.step()
            await asyncio.sleep(period)


class Served:
    """Where each served device can be reached."""

    def __init__(self, tcp: Mapping[tuple[str, str], tuple[str, int]],
                 ptys: Mapping[tuple[str, str], str]) -> None:
        self._tcp = dict(tcp)
        self._ptys = dict(ptys)

    def address(self, home: str, role: str) -> tuple[str, int]:
        """``(host, port)`` of a device's Modbus TCP server."""
        try:
            return self._tcp[home, role]
        except KeyError:
            raise KeyError(f"no served device {home}/{role}") from None

    def rtu_path(self, home: str, role: str) -> str:
        """Path of the pty a device answers Modbus RTU on (``serve(rtu=True)``)."""
        try:
            return self._ptys[home, role]
        except KeyError:
            raise KeyError(f"no RTU pty for {home}/{role} (serve with rtu=True)") from None
