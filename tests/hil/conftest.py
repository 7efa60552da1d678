"""The device under test: the real one named by ``--hil-modbus``/``--hil-serial``, or else every
role both simulated and as the firmware itself on the MicroPython unix port
(tests/firmware/unix_device.py), each over Modbus TCP and over RTU on a pty.

A test names the roles it applies to with ``@pytest.mark.hil_roles(...)`` (setpoint checks do not
apply to a meter, which has none). The simulated parameters are filtered by it; a real device's
role is only known after its SunSpec scan, so a test that does not apply to it is skipped then.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.devices import ModbusBus, ModbusSerialBus, ModbusTcpBus, discover
from tests._require import require
from tests.firmware.unix_device import unix_device
from tests.hil.device import ROLES, SIM_DEVICE, DeviceUnderTest, role_of, sim_world
from tests.hil.options import RealTarget, real_target

_SIM_SPEED = 10.0
"""Simulated seconds per real second: a 20 s revert time passes in 2 s."""
_SIM_REVERT_S = 20
_MPY_REVERT_S = 3
"""Wall-clock seconds: the firmware on the unix port keeps real time, as a board does."""


@dataclass(frozen=True, slots=True)
class MicroPythonTarget:
    """The firmware of ``role`` as a device process on the MicroPython unix port."""

    role: str
    transport: str  # "tcp" or "rtu"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hil_roles(*roles): device roles a HIL check applies to")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" not in metafunc.fixturenames:
        return
    real = real_target(metafunc.config)
    if real is not None:
        metafunc.parametrize("target", [real], ids=[real.label])
        return
    marker = metafunc.definition.get_closest_marker("hil_roles")
    roles = marker.args if marker is not None else ROLES
    pairs = [(role, transport) for role in roles for transport in ("tcp", "rtu")]
    params = [pytest.param(pair, id=f"sim-{pair[0]}-{pair[1]}") for pair in pairs]
    params += [pytest.param(MicroPythonTarget(role, transport), id=f"mpy-{role}-{transport}",
                            marks=pytest.mark.micropython_unix) for role, transport in pairs]
    metafunc.parametrize("target", params)


@pytest.fixture
async def dut(request: pytest.FixtureRequest, tmp_path: Path,
              target: RealTarget | MicroPythonTarget | tuple[str, str],
              ) -> AsyncIterator[DeviceUnderTest]:
    """The device under test with an open bus, found by the gateway's own discovery."""
    marker = request.node.get_closest_marker("hil_roles")
    wanted = marker.args if marker is not None else ROLES
    if isinstance(target, RealTarget):
        async with _real_dut(target, wanted) as found:
            yield found
        return
    if isinstance(target, MicroPythonTarget):
        rtu = target.transport == "rtu"
        with unix_device(target.role, tmp_path, rtu=rtu) as board:
            real = RealTarget(transport=target.transport, where=board.serial or "127.0.0.1",
                              port=board.port, unit=board.unit, baud=115200,
                              revert_s=_MPY_REVERT_S)
            async with _real_dut(real, wanted) as found:
                yield found
        return
    role, transport = target
    if transport == "rtu":
        require(hasattr(os, "openpty"), "no pty support on this OS")
    world = sim_world(speed=_SIM_SPEED)
    async with world.serve(rtu=transport == "rtu") as served:
        bus: ModbusBus
        device = SIM_DEVICE.get(role, role)
        if transport == "tcp":
            host, port = served.address("hil", device)
            bus = ModbusTcpBus(host=host, port=port, timeout_s=1.0)
        else:
            bus = ModbusSerialBus(port=served.rtu_path("hil", device), baudrate=115200,
                                  timeout_s=1.0)
        async with bus:
            found = await discover(bus, unit=1)
            yield DeviceUnderTest(role=role, bus=bus, device=found, revert_s=_SIM_REVERT_S,
                                  now_s=lambda: world.now_s, resolution_s=world.dt_ms / 1000,
                                  real_per_device_s=1 / _SIM_SPEED, simulated=True)


@contextlib.asynccontextmanager
async def _real_dut(target: RealTarget, wanted: tuple[str, ...]
                    ) -> AsyncIterator[DeviceUnderTest]:
    """A device on the bench (or a process standing for one), driven over its own clock."""
    async with _real_bus(target) as bus:
        found = await discover(bus, unit=target.unit)
        role = role_of(found)
        if role not in wanted:
            pytest.skip(f"the real device is a {role}; this check is for {', '.join(wanted)}")
        yield DeviceUnderTest(role=role, bus=bus, device=found, revert_s=target.revert_s,
                              now_s=time.monotonic, resolution_s=1.0, real_per_device_s=1.0,
                              simulated=False)


def _real_bus(target: RealTarget) -> ModbusBus:
    if target.transport == "tcp":
        return ModbusTcpBus(host=target.where, port=target.port, timeout_s=1.0)
    return ModbusSerialBus(port=target.where, baudrate=target.baud, timeout_s=1.0)
