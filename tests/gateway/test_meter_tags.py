"""Tagged meter readings end to end over Modbus TCP: a simulated meter (firmware meter role with
a TaggedCounter, served by sim_devices) publishes model 64210; the gateway's Meter driver reads it
with pymodbus and ``verify_meter_reading`` accepts it with the provisioned key, and rejects a
tampered register, a foreign key and a replay."""

from __future__ import annotations

import dataclasses

from firmware import metering
from gateway.devices import Meter, ModbusTcpBus, discover
from gateway.devices.meter import TAGGED_MODEL, verify_meter_reading
from protocols.metering import RejectedReading, VerifiedReading
from protocols.sunspec.devices import DeviceMap
from sim_devices.home import HomeSpec
from sim_devices.world import World, sim_meter_key

SEED = 7


def _world() -> tuple[World, str, bytes]:
    # Nearly frozen clock: the test steps the world itself, so nothing ticks between reads.
    world = World(homes=[HomeSpec(name="home-1")], seed=SEED, speed=1e-6, start_s=12 * 3600)
    device_id = "home-1-meter"
    key = world.home("home-1").meter_key
    assert key == sim_meter_key(SEED, device_id)
    return world, device_id, key


def test_sim_keys_are_deterministic_and_per_device() -> None:
    assert sim_meter_key(SEED, "home-1-meter") == sim_meter_key(SEED, "home-1-meter")
    assert sim_meter_key(SEED, "home-1-meter") != sim_meter_key(SEED, "home-2-meter")
    assert sim_meter_key(SEED, "home-1-meter") != sim_meter_key(SEED + 1, "home-1-meter")


async def test_untagged_sim_meter_serves_64210_without_tags() -> None:
    world = World(homes=[HomeSpec(name="home-1")], seed=SEED, speed=1e-6, start_s=12 * 3600)
    # A meter flashed without a key: no tagger, model 64210 blanked as the firmware leaves it.
    home = world.home("home-1")
    home.meter_role.tagger = None
    metering.blank(home.devices["meter"].bank,
                   DeviceMap.for_role("meter").block(TAGGED_MODEL).address, 0)
    async with world.serve() as served:
        host, port = served.address("home-1", "meter")
        async with ModbusTcpBus(host=host, port=port, timeout_s=2) as bus:
            meter = Meter(bus=bus, device=await discover(bus, unit=1))
            reading = await meter.read()
    assert meter.tagged and reading.seq is None and reading.tag is None
    assert verify_meter_reading(reading, device_id="home-1-meter", key=bytes(32),
                                last_seq=None) == RejectedReading("untagged")


async def test_tags_verify_over_modbus_tcp_and_tampering_is_rejected() -> None:
    world, device_id, key = _world()
    home = world.home("home-1")
    bank = home.devices["meter"].bank
    status = DeviceMap.for_role("meter").block(TAGGED_MODEL).address
    async with world.serve() as served:
        host, port = served.address("home-1", "meter")
        async with ModbusTcpBus(host=host, port=port, timeout_s=2) as bus:
            device = await discover(bus, unit=1)
            assert device.common.serial == device_id
            meter = Meter(bus=bus, device=device)
            for _ in range(30):
                world.step()
            first = await meter.read()
            assert first.seq is not None and first.tag is not None and first.seq >= 30
            assert first.import_wh == home.meter.import_wh
            assert first.export_wh == home.meter.export_wh > 0  # a sunny noon: the home exports
            assert verify_meter_reading(first, device_id=device_id, key=key, last_seq=None) == (
                VerifiedReading(device_id, first.seq, first.import_wh, first.export_wh))

            # Someone rewrites the served export counter (one register of model 64210).
            exp_lo = status + metering.OFF_EXP + 3
            bank.set(exp_lo, (bank.get(exp_lo) + 100) & 0xFFFF)
            # Read by a driver of its own: the tag is what must catch it (a +100 Wh step is
            # plausible without a clock), and ``meter`` keeps the genuine reading as its baseline.
            tampered = await Meter(bus=bus, device=device).read()
            assert tampered.seq == first.seq and tampered.export_wh != first.export_wh
            assert verify_meter_reading(tampered, device_id=device_id, key=key,
                                        last_seq=None) == RejectedReading("bad-tag")
            # ...or the gateway's copy of a reading is altered, or checked with another key.
            altered = dataclasses.replace(first, import_wh=first.import_wh + 1)
            assert verify_meter_reading(altered, device_id=device_id, key=key,
                                        last_seq=None) == RejectedReading("bad-tag")
            assert verify_meter_reading(first, device_id=device_id,
                                        key=sim_meter_key(SEED + 1, device_id),
                                        last_seq=None) == RejectedReading("bad-tag")

            world.step()  # the next tick republishes a fresh, genuine reading
            second = await meter.read()
            assert second.seq == first.seq + 1
            assert isinstance(verify_meter_reading(second, device_id=device_id, key=key,
                                                   last_seq=first.seq), VerifiedReading)
            assert verify_meter_reading(first, device_id=device_id, key=key,
                                        last_seq=second.seq) == RejectedReading("replayed")
