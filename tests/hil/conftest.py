"""The device under test: the real one named by ``--hil-modbus``/``--hil-serial``, or else every
simulated role over Modbus TCP and over RTU on a pty.

A test names the roles it applies to with ``@pytest.mark.hil_roles(...)`` (setpoint checks do not
apply to a meter, which has none). The simulated parameters are filtered by it; a real device's
role is only known after its SunSpec scan, so a test that does not apply to it is skipped then.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator

import pytest

from gateway.devices import ModbusBus, ModbusSerialBus, ModbusTcpBus, discover
from tests._require import require
from tests.hil.device import ROLES, SIM_DEVICE, DeviceUnderTest, role_of, sim_world
from tests.hil.options import RealTarget, real_target

_SIM_SPEED = 10.0
"""Simulated seconds per real second: a 20 s revert time passes in 2 s."""
_SIM_REVERT_S = 20


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
    params = [(role, transport) for role in roles for transport in ("tcp", "rtu")]
    metafunc.parametrize("target", params, ids=[f"sim-{r}-{t}" for r, t in params])


@pytest.fixture
async def dut(request: pytest.FixtureRequest, target: RealTarget | tuple[str, str],
              ) -> AsyncIterator[DeviceUnderTest]:
    """The device under test with an open bus, found by the gateway's own discovery."""
    marker = request.node.get_closest_marker("hil_roles")
    wanted = marker.args if marker is not None else ROLES
    if isinstance(target, RealTarget):
        async with _real_bus(target) as bus:
            found = await discover(bus, unit=target.unit)
            role = role_of(found)
            if role not in wanted:
                pytest.skip(f"the real device is a {role}; this check is for {', '.join(wanted)}")
            yield DeviceUnderTest(role=role, bus=bus, device=found, revert_s=target.revert_s,
                                  now_s=time.monotonic, resolution_s=1.0, real_per_device_s=1.0,
                                  simulated=False)
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


def _real_bus(target: RealTarget) -> ModbusBus:
    if target.transport == "tcp":
        return ModbusTcpBus(host=target.where, port=target.port, timeout_s=1.0)
    return ModbusSerialBus(port=target.where, baudrate=target.baud, timeout_s=1.0)
