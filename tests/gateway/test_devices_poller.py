"""DevicePoller against real devices over TCP: freshness, staleness, backoff, isolation."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.devices import Battery, DevicePoller, Meter, ModbusTcpBus, discover
from gateway.devices.battery import BatteryReading
from gateway.devices.meter import MeterReading
from tests.gateway.test_devices_helpers import serve

_GUARD_S = 10.0  # only to turn a hang into a failure; no test relies on timing


async def test_failing_device_goes_stale_without_stalling_its_neighbour() -> None:
    async with (
        serve("battery") as bat_dev,
        serve("meter") as meter_dev,
        ModbusTcpBus(host="127.0.0.1", port=bat_dev.port, timeout_s=0.05, retries=0) as bat_bus,
        ModbusTcpBus(host="127.0.0.1", port=meter_dev.port, timeout_s=0.5, retries=0) as m_bus,
    ):
        battery = Battery(bus=bat_bus, device=await discover(bat_bus, unit=1))
        meter = Meter(bus=m_bus, device=await discover(m_bus, unit=1))
        bat_poll: DevicePoller[BatteryReading] = DevicePoller(
            name="battery", driver=battery, period_s=0.01, stale_after=3, backoff_max_s=0.04)
        # the meter's staleness window (0.5 s) leaves room for a loaded CI machine's event loop
        meter_poll: DevicePoller[MeterReading] = DevicePoller(
            name="meter", driver=meter, period_s=0.05, stale_after=10, backoff_max_s=0.1)
        assert bat_poll.stale and bat_poll.latest is None

        async with asyncio.timeout(_GUARD_S), asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(p.run()) for p in (bat_poll, meter_poll)]
            await bat_poll.wait_until(lambda p: p.latest is not None and not p.stale)
            assert bat_poll.latest is not None and bat_poll.latest.soc_pct == 55.0

            bat_dev.fault = "silent"
            await bat_poll.wait_until(lambda p: p.health.consecutive_failures >= 3)
            assert bat_poll.stale
            assert bat_poll.health.last_error is not None
            assert "DeviceTimeout" in bat_poll.health.last_error
            assert bat_poll.latest is not None  # the last good reading is kept, marked stale

            # While the battery was failing the meter kept being polled.
            meter_polls = meter_poll.health.successes
            await meter_poll.wait_until(lambda p: p.health.successes >= meter_polls + 3)
            assert not meter_poll.stale

            bat_dev.fault = None
            await bat_poll.wait_until(lambda p: not p.stale)
            assert bat_poll.health.consecutive_failures == 0
            for t in tasks:
                t.cancel()


def test_backoff_doubles_per_failure_up_to_the_cap() -> None:
    class Never:
        async def read(self) -> int:
            raise AssertionError("not polled in this test")

    poller: DevicePoller[int] = DevicePoller(
        name="x", driver=Never(), period_s=1.0, backoff_max_s=5.0)
    delays = []
    for failures in range(5):
        poller._consecutive = failures  # the counter poll_once keeps; set directly for the table
        delays.append(poller.next_delay_s())
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]


async def test_poll_once_counts_and_ages() -> None:
    now = [100.0]
    async with serve("meter") as dev, ModbusTcpBus(host="127.0.0.1", port=dev.port) as bus:
        meter = Meter(bus=bus, device=await discover(bus, unit=1))
        poller: DevicePoller[MeterReading] = DevicePoller(
            name="meter", driver=meter, period_s=1.0, stale_after=2, clock=lambda: now[0])
        reading = await poller.poll_once()
        assert reading is not None and reading.power_w == 1234
        assert (poller.age_s, poller.stale) == (0.0, False)
        now[0] += 2.5  # older than stale_after periods: stale even without failures
        assert poller.stale
        assert poller.health.polls == poller.health.successes == 1


async def test_a_device_that_stays_down_is_logged_once_per_outage(
        caplog: pytest.LogCaptureFixture) -> None:
    """An inverter asleep all night fails every poll for hours: one warning when it goes down (and
    one per new reason), one line when it answers again, not a warning per poll."""
    async with (
        serve("battery") as dev,
        ModbusTcpBus(host="127.0.0.1", port=dev.port, timeout_s=0.2, retries=0) as bus,
    ):
        battery = Battery(bus=bus, device=await discover(bus, unit=1))
        poller: DevicePoller[BatteryReading] = DevicePoller(
            name="battery", driver=battery, period_s=0.01, stale_after=3, backoff_max_s=0.01)
        caplog.set_level(logging.INFO, logger="gateway.devices.poller")
        async with asyncio.timeout(_GUARD_S * 3):
            for _outage in range(2):
                dev.fault = "silent"
                for _ in range(6):
                    assert await poller.poll_once() is None
                dev.fault = None
                while await poller.poll_once() is None:  # a loaded host may time out once more
                    pass
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        back = [r.getMessage() for r in caplog.records if "answering again" in r.getMessage()]
        assert len(back) == 2, back
        # one warning per outage and per new reason in it, never one per failed poll
        reasons = {m.split(": ", 2)[-1] for m in warnings}
        assert 2 <= len(warnings) <= 2 * len(reasons) < 12, warnings
