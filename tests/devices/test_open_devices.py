"""How the home opens its devices (``open_devices``), against maps pysunspec2 built, served by
pymodbus over TCP: devices behind one address share one bus; a device slow to answer first is
adopted when its entry gives it ``first_timeout_s``, and reported absent (not fatal) when not.
"""

from __future__ import annotations

import contextlib

from gateway.clock import Clock
from gateway.config import DeviceConfig
from gateway.home.devices import open_devices
from tests.devices.maps import inverter, meter
from tests.devices.served import framed, serve


async def test_devices_behind_one_address_share_one_bus() -> None:
    async with serve({1: framed(inverter()), 2: framed(meter())}) as served:
        configs = (DeviceConfig(name="inverter", kind="pv", url=served.url, unit=1),
                   DeviceConfig(name="meter", kind="meter", url=served.url, unit=2,
                                timeout_s=2.0))
        async with contextlib.AsyncExitStack() as stack:
            home = await open_devices(configs, clock=Clock.wall(), stack=stack)
            assert home.pv is not None and home.meter is not None
            assert home.pv.adopted and home.meter.adopted
            assert home.pv.bus is home.meter.bus
            assert home.pv.bus.stats.connects == 1  # one connection for both units
            assert await home.meter.poller.poll_once() is not None
            assert await home.pv.poller.poll_once() is not None


async def test_a_slow_first_answer_is_waited_for_with_first_timeout_s() -> None:
    async with serve({1: framed(meter())}, slow_first_s=0.6) as served:
        quick = DeviceConfig(name="meter", kind="meter", url=served.url, timeout_s=0.2)
        async with contextlib.AsyncExitStack() as stack:
            home = await open_devices((quick,), clock=Clock.wall(), stack=stack)
            assert home.meter is not None and not home.meter.adopted  # started without it
            assert home.meter.adoption.why == "absent"
        patient = quick.model_copy(update={"first_timeout_s": 3.0})
        async with contextlib.AsyncExitStack() as stack:
            home = await open_devices((patient,), clock=Clock.wall(), stack=stack)
            assert home.meter is not None and home.meter.adopted
