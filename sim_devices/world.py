"""A simulated community on a simulated clock: homes, their devices, and the loop that steps them.

Each home's meter, PV inverter and battery is a real device as far as a gateway can tell: a
``RegisterBank`` with the role's SunSpec map, filled by the firmware's own role code, which reads
the physics through the fake HAL. One world step is:

1. set every device clock to the new time; role code reverts expired setpoints (``tick``);
2. physics follows what the role code commanded through the HAL (battery power, PV limit);
3. the physics results go back into the HAL; role code publishes them into registers.

The world steps in fixed ``dt_ms`` increments of simulated time, so a run is reproducible from its
seed and does not depend on how fast the host is; ``serve`` only decides *when* (in real time) the
next steps happen, from ``speed``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass

from firmware.hal.fake import FakeBatteryStage, FakeClock, FakeMeterIC, FakePvStage
from firmware.modbus.bank import RegisterBank
from firmware.roles.battery import BatteryRole
from firmware.roles.common import Points
from firmware.roles.meter import MeterRole
from firmware.roles.pv import PvRole
from protocols.sunspec.devices import DeviceMap
from sim_devices.faults import FaultSpec
from sim_devices.home import HomeProfiles, HomeSpec, HomeState, home_initial, home_step
from sim_devices.physics import MJ_PER_WH, PhysicsError

ROLES = ("meter", "pv", "battery")
_NOMINAL_V_X10 = 2300
_BATTERY_V_X10 = 500


def point_table(device_map: DeviceMap) -> dict[int, tuple[int, dict[str, tuple[int, str, int]]]]:
    """The firmware role code's point table for a role, from the protocol's layout."""
    return {
        block.model_id: (block.address,
                         {p.name: (p.offset, p.type, p.size) for p in model.points})
        for block, model in zip(device_map.blocks, device_map.models, strict=True)
    }


class Device:
    """One simulated device: its register bank (what is served), role code and fake HAL."""

    def __init__(self, *, role: str, home: str, faults: FaultSpec | None) -> None:
        self.role = role
        self.name = f"{home}/{role}"
        self.map = DeviceMap.for_role(role)
        self.bank = RegisterBank(self.map.base, self.map.size)
        for addr, value in self.map.fixed_registers().items():
            self.bank.set(addr, value)
        self.points = Points(self.bank, point_table(self.map))
        self.faults = faults


@dataclass(frozen=True, slots=True)
class BatteryReading:
    """Ground truth of a battery for tests: SoC, terminal power (+ = charge), command."""

    soc_pct: float
    power_w: int
    stored_wh: float
    command_w: int


@dataclass(frozen=True, slots=True)
class PvReading:
    power_w: int
    available_w: int
    limit_w: int | None


@dataclass(frozen=True, slots=True)
class MeterReading:
    """Grid connection: + = import."""

    power_w: int
    import_wh: int
    export_wh: int


class Home:
    """One home: spec, physics state and its three devices, stepped by the world."""

    def __init__(self, spec: HomeSpec, *, world_seed: int, t_ms: int,
                 faults: Mapping[str, FaultSpec]) -> None:
        self.spec = spec
        self._profiles = HomeProfiles(spec, world_seed=world_seed)
        self.state: HomeState = home_initial(spec, t_ms=t_ms)
        self.clock = FakeClock(t_ms)
        self.hal_meter = FakeMeterIC()
        self.hal_pv = FakePvStage()
        self.hal_battery = FakeBatteryStage()
        self.devices = {role: Device(role=role, home=spec.name, faults=faults.get(role))
                        for role in ROLES}
        self._write_hal()
        self.meter_role = MeterRole(self.devices["meter"].points, front_end=self.hal_meter,
                                    serial=f"{spec.name}-meter")
        self.pv_role = PvRole(self.devices["pv"].points, stage=self.hal_pv, clock=self.clock,
                              serial=f"{spec.name}-pv", rating_w=max(1, spec.pv_peak_w))
        self.battery_role = BatteryRole(
            self.devices["battery"].points, stage=self.hal_battery, clock=self.clock,
            serial=f"{spec.name}-battery", capacity_wh=spec.battery_wh,
            max_charge_w=spec.battery_max_w, max_discharge_w=spec.battery_max_w,
            soc_min_pct=spec.soc_min_pct, soc_max_pct=spec.soc_max_pct)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def battery(self) -> BatteryReading:
        b = self.state.battery
        return BatteryReading(b.soc_pct(self.spec.battery_spec()), b.power_w,
                              b.stored_mj / MJ_PER_WH, self.hal_battery.command_w)

    @property
    def pv(self) -> PvReading:
        return PvReading(self.state.pv.power_w, self.state.pv.available_w, self.hal_pv.limit_w)

    @property
    def meter(self) -> MeterReading:
        m = self.state.meter
        return MeterReading(m.power_w, m.import_wh, m.export_wh)

    def step(self, dt_ms: int) -> None:
        self.clock.now_ms = self.state.t_ms
        self.pv_role.tick()
        self.battery_role.tick()
        self.state = home_step(self.spec, self._profiles, self.state, dt_ms=dt_ms,
                               battery_command_w=self.hal_battery.command_w,
                               pv_limit_w=self.hal_pv.limit_w)
        self.clock.now_ms = self.state.t_ms
        self._write_hal()
        self.meter_role.tick()
        self.pv_role.tick()
        self.battery_role.tick()

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


class World:
    """Every home of a community on one simulated clock.

    ``start_s`` is the simulated time (seconds since midnight of day 0) the world starts at;
    ``speed`` is simulated seconds per real second while served; ``dt_ms`` the fixed physics step.
    ``faults`` maps ``(home, role)`` to what goes wrong with that device when served.
    """

    def __init__(self, *, homes: Iterable[HomeSpec], seed: int = 0, speed: float = 1.0,
                 start_s: float = 0.0, dt_ms: int = 1000,
                 faults: Mapping[tuple[str, str], FaultSpec] | None = None) -> None:
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
        faults = dict(faults or {})
        unknown = [key for key in faults if key[0] not in names or key[1] not in ROLES]
        if unknown:
            raise PhysicsError(f"faults name unknown devices {unknown}; roles are {ROLES}")
        self.seed = seed
        self.speed = speed
        self.dt_ms = dt_ms
        self._now_ms = round(start_s * 1000)
        self._homes = {
            s.name: Home(s, world_seed=seed, t_ms=self._now_ms,
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

    def step(self) -> None:
        """Advance every home by one ``dt_ms``."""
        for home in self._homes.values():
            home.step(self.dt_ms)
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
