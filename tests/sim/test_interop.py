"""Independent clients: pymodbus's RTU serial client over a pty, and pysunspec2's own scanner."""

import asyncio

import pytest
import sunspec2.device as ss_device
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusException
from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

from protocols.sunspec.devices import ROLE_MODELS, SUNS_MARKER, DeviceMap
from protocols.sunspec.models import VENDOR_MODELS
from sim_devices.home import HomeSpec
from sim_devices.world import World
from tests.sim.conftest import until


def _world():
    return World(homes=[HomeSpec(name="home-1")], seed=2, speed=300.0, start_s=11 * 3600)


async def test_rtu_over_pty_reads_and_writes_like_a_gateway_on_rs485():
    world = _world()
    dm = DeviceMap.for_role("battery")
    async with world.serve(rtu=True) as served:
        path = served.rtu_path("home-1", "battery")
        async with AsyncModbusSerialClient(path, baudrate=115200, timeout=1) as client:
            rr = await client.read_holding_registers(40000, count=2, device_id=1)
            assert tuple(rr.registers) == SUNS_MARKER
            mod = dm.address(124, "StorCtl_Mod")
            rr = await client.write_registers(mod, [2], device_id=1)
            assert not rr.isError()
            rr = await client.write_registers(dm.address(124, "OutWRte"), [5000, 0],
                                              device_id=1)
            assert not rr.isError()
            assert world.home("home-1").battery.command_w == -1500
            assert await until(world, lambda: world.home("home-1").battery.power_w == -1500,
                               sim_s=60)
        # A frame for another unit on the shared bus gets silence, not an answer.
        async with AsyncModbusSerialClient(path, baudrate=115200, timeout=0.3,
                                           retries=0) as client:
            with pytest.raises(ModbusException):
                await client.read_holding_registers(40000, count=2, device_id=7)


async def test_pysunspec2_client_scans_every_served_device(monkeypatch):
    # pysunspec2 lists only models it has a definition for: give it our vendor models' folder,
    # as a user of pysunspec2 would (docs/sunspec-vendor-model.md).
    monkeypatch.setattr(ss_device, "model_defs_path",
                        [*ss_device.model_defs_path, str(VENDOR_MODELS[64210].parent)])
    world = _world()
    async with world.serve() as served:
        for role in ("meter", "pv", "battery"):
            host, port = served.address("home-1", role)

            def scan(host=host, port=port):
                device = SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr=host, ipport=port,
                                                      timeout=5)
                try:
                    device.scan()
                    common = device.common[0]
                    return (sorted(m.model_id for m in device.model_list),
                            common.SN.cvalue, common.Mn.cvalue)
                finally:
                    device.close()

            model_ids, serial, maker = await asyncio.to_thread(scan)
            assert model_ids == sorted(ROLE_MODELS[role])
            assert serial == f"home-1-{role}" and maker == "gridpeer"
