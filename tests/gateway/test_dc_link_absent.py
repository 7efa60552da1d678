"""A DC-bus home whose converter is absent: its DC link neither polls nor commands it every
control period (each a warning), it waits with the home safe and says why; the device's adoption
alone tries it, logs each new reason once and counts the tries."""

from __future__ import annotations

import contextlib
import logging
import socket

import pytest

from gateway.clock import Clock
from gateway.config import DeviceConfig
from gateway.envelope import BatteryEnvelope, ConverterEnvelope
from gateway.home.dc_link import DcLink
from gateway.home.devices import open_devices
from gateway.home.records import NodeState
from protocols.market import Timing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_absent_converter_is_not_polled_or_commanded_every_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = DeviceConfig(name="converter", kind="dcdc", timeout_s=0.2,
                          url=f"tcp://127.0.0.1:{_free_port()}")  # nothing listens there
    async with contextlib.AsyncExitStack() as stack:
        home = await open_devices((config,), clock=Clock.wall(), stack=stack)
        device = home.converter
        assert device is not None and not device.adopted
        state = NodeState()
        link = DcLink(
            node="home-2", device=device, master=False, bus_voltage_v=350,
            envelope=ConverterEnvelope(max_current_a=10, bus_v_min=320, bus_v_max=380),
            battery_envelope=BatteryEnvelope(soc_min_pct=10, soc_max_pct=95,
                                             max_charge_w=3000, max_discharge_w=3000,
                                             ramp_w_per_s=1000),
            state=state, timing=Timing(epoch_ms=0, length_ms=900_000, gate_ms=60_000,
                                       grace_ms=10_000),
            clock=Clock.wall(), revert_s=60)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            for _ in range(5):
                command = await link.step(3, 60_000, state.record(3), meter=None, battery=None,
                                          battery_envelope=None)
            await link.go_safe("control fault (test)")
        assert command.mode == "wait"
        assert command.safe_reason.startswith("converter not in the home: ")
        assert command.safe_reason == command.reason
        assert device.poller.health.polls == 0  # nothing asked of a device not in the home
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and "converter WAIT (converter not in the home" in said[0], said
        assert state.converter is not None and state.converter.safe_reason == (
            "control fault (test)")
        assert link.delivered_wh(state.record(3)) == 0
        assert device.adoption.tries == 1  # the one try at start; Device.run retries, counted
