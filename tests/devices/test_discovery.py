"""Discovery as real devices need it, on maps pysunspec2 built: the SunSpec base at 0, 40000 or
50000; a map that ends without the end marker's L; a chain longer than our own (14 models; 160
with more modules than one request holds; a vendor model nobody defines); several units behind
one TCP address; a device slow to give its first answer on a new connection."""

from __future__ import annotations

import asyncio

import pytest
from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

from gateway.devices import DeviceTimeout, Meter, ModbusTcpBus, PvInverter, discover
from tests.devices.maps import inverter, meter
from tests.devices.served import DER_1547, device_file, framed, serve


def _pysunspec2_chain(port: int, unit: int) -> list[tuple[int, int, int]]:
    """(model id, address of its ID register, L) as pysunspec2's own client scans the map."""
    dev = SunSpecModbusClientDeviceTCP(slave_id=unit, ipaddr="127.0.0.1", ipport=port, timeout=5)
    try:
        dev.scan(full_model_read=False)
        return [(m.model_id, m.model_addr, m.model_len) for m in dev.model_list]
    finally:
        dev.close()


@pytest.mark.parametrize("base", [0, 40000, 50000])
async def test_the_map_is_found_at_each_sunspec_base_and_walked_as_pysunspec2_walks_it(
        base: int) -> None:
    async with serve({1: framed([device_file(DER_1547)], base=base)}) as served:
        async with ModbusTcpBus(host="127.0.0.1", port=served.port, timeout_s=2.0) as bus:
            found = await discover(bus, unit=1)
        theirs = await asyncio.to_thread(_pysunspec2_chain, served.port, 1)
    assert found.base_address == base
    assert [(loc.model_id, loc.address, loc.length) for loc in found.chain] == theirs
    assert len(found.chain) == 14
    assert (found.common.manufacturer, found.common.serial) == ("SunSpecTest", "sn-123456789")


async def test_a_map_ending_without_the_end_markers_length_is_walked() -> None:
    """Some devices serve the 0xFFFF end marker as the last register and refuse a read past it."""
    async with serve({1: framed(meter(213), base=0, end_length=False)}) as served:
        async with ModbusTcpBus(host="127.0.0.1", port=served.port, timeout_s=2.0) as bus:
            found = await discover(bus, unit=1)
            assert [loc.model_id for loc in found.chain] == [1, 213]
            assert (await Meter(bus=bus, device=found).read()).power_w == -1500


async def test_a_long_chain_with_repeating_groups_and_an_unknown_vendor_model() -> None:
    """1, 103, 120–123, 160 with eight MPPT modules (L 168: more than one request holds), a
    vendor model nobody here or in pysunspec2 defines, then a meter model: the inverter is driven
    from its models wherever they sit."""
    vendor = [64_999, 6, *([0] * 6)]
    models = [*inverter(103, modules=8), vendor, meter(213)[1]]
    async with serve({1: framed(models)}) as served:
        async with ModbusTcpBus(host="127.0.0.1", port=served.port, timeout_s=2.0) as bus:
            found = await discover(bus, unit=1)
            theirs = await asyncio.to_thread(_pysunspec2_chain, served.port, 1)
            # pysunspec2 lists only the models it has a definition for.
            assert [(loc.model_id, loc.address, loc.length) for loc in found.chain
                    if loc.model_id != 64_999] == theirs
            assert [loc.model_id for loc in found.chain] == [
                1, 103, 120, 121, 122, 123, 160, 64_999, 213]
            assert found.location(160).length == 8 + 8 * 20  # type: ignore[union-attr]
            pv = PvInverter(bus=bus, device=found)
            assert (await pv.read()).power_w == -2500
            await pv.set_limit(pct=50, revert_s=60)
            assert (await pv.read()).limit_pct == 50
            assert (await Meter(bus=bus, device=found).read()).power_w == -1500


async def test_units_behind_one_tcp_address_are_discovered_each_by_its_unit() -> None:
    maps = {1: framed(inverter(113, w=2500.0)), 2: framed(meter(203)), 7: framed(meter(211))}
    async with serve(maps) as served:
        async with ModbusTcpBus(host="127.0.0.1", port=served.port, timeout_s=2.0) as bus:
            chains = {unit: [loc.model_id for loc in (await discover(bus, unit=unit)).chain]
                      for unit in maps}
    assert chains == {1: [1, 113, 120, 121, 122, 123, 160], 2: [1, 203], 7: [1, 211]}


async def test_a_slow_first_answer_is_waited_for_only_when_the_bus_allows_it() -> None:
    """Every new connection's first answer comes after 1 s, later ones at once. With a 0.2 s
    timeout alone the device never answers (each timeout closes the link it would answer on);
    with a first answer allowed 10 s it is discovered and polled at the normal timeout."""
    async with serve({1: framed(meter(203))}, slow_first_s=1.0) as served:
        async with ModbusTcpBus(host="127.0.0.1", port=served.port, timeout_s=0.2,
                                retries=2, backoff_s=0.0) as impatient:
            with pytest.raises(DeviceTimeout):
                await discover(impatient, unit=1)
        async with ModbusTcpBus(host="127.0.0.1", port=served.port, timeout_s=0.2,
                                first_timeout_s=10.0, retries=2, backoff_s=0.0) as bus:
            found = await discover(bus, unit=1)
            m = Meter(bus=bus, device=found)
            for _ in range(3):
                assert (await m.read()).power_w == -1500
            assert bus.stats.timeouts == 0 and bus.stats.connects == 1
