"""A battery whose map cannot carry the setpoint is not commanded again, and says so once.

pysunspec2's DER image as a storage DER without 124, its 704 leaving ``WSet_SF`` "not
implemented": it reads (SoC, capacity, rates: a battery the plan could count on) but the driver
refuses every setpoint (``NotCommandable``). Served over Modbus TCP, adopted by the home's
:class:`~gateway.home.devices.Device`, driven by the real battery controller: nothing is ever
written to it (safe mode included), the refusal is logged once and counted in the holds the
status shows, and the reason the battery idles names the point.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.clock import Clock
from gateway.config import DeviceConfig, EnvelopeConfig
from gateway.devices import ModbusTcpBus
from gateway.ems import Preferences
from gateway.forecast import HomeForecaster
from gateway.home.battery import BatteryController
from gateway.home.devices import Device
from gateway.home.records import NodeState
from protocols.market import Timing
from tests.devices.maps import STORAGE_1547, der_1547
from tests.devices.served import framed, serve

_UNSCALED = {**STORAGE_1547, 704: {**STORAGE_1547[704], "WSet_SF": None}}
_WHY = "charge/discharge power: model 704 leaves WSet_SF not implemented"


async def test_a_battery_that_refuses_the_setpoint_is_not_commanded_again_and_is_reported_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock.wall()
    timing = Timing(epoch_ms=0, length_ms=60_000, gate_ms=20_000, grace_ms=5_000)
    async with serve({1: framed(der_1547(tmp_path, _UNSCALED))}) as served, ModbusTcpBus(
            host="127.0.0.1", port=served.port, timeout_s=2.0) as bus:
        battery: Device[object, object] = Device(
            config=DeviceConfig(name="battery", kind="battery", url=served.url), bus=bus,
            now_s=lambda: clock.now_ms() / 1000, period_s=1.0)
        assert await battery.attempt(interval=0, trading=False)
        reading = await battery.poller.poll_once()
        assert reading is not None and battery.refused == _WHY
        state = NodeState()
        controller = BatteryController(
            node="home-1", battery=battery, meter=None, pv=None, dc=None,  # type: ignore[arg-type]
            envelope=EnvelopeConfig().battery(), headroom_pct=0.0,
            prefs=lambda: Preferences(min_sell_price=120, max_buy_price=250),
            forecaster=HomeForecaster(), shifted_w=lambda: 0, state=state, timing=timing,
            clock=clock, revert_s=60, on_event=lambda _e: None)
        caplog.set_level(logging.INFO, logger="gateway.home.battery")
        now = clock.now_ms()
        for step in range(5):
            await battery.poller.poll_once()
            await controller.step(now // timing.length_ms, now + step * 1000, 1000)
        await controller.go_safe()
        assert served.writes[1] == []
        assert controller.holds == {"battery": 1}
        assert _WHY in state.safe_reason and "held idle" in state.safe_reason
        said = [r for r in caplog.records if _WHY in r.getMessage()]
        assert len(said) == 1 and said[0].levelno == logging.WARNING, said
