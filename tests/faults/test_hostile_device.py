"""Whatever a device reports, the gateway goes safe for that device and keeps running.

One home, its battery, meter and PV simulated and served over Modbus TCP, a real gateway node
trading on the embedded broker. The battery's registers are set to what a hostile or confused
device can hold (a backup-mode inverter's minimum SoC of 100 %, a window upside down, a state of
charge past 100 %, a scale factor "not implemented", no capacity), the meter's counter jumps by
more than a settlement can carry, and an error nobody expected is injected into the control loop
and the trader. In every case the node keeps running, the battery ends up idle with a revert
time (commanded by the gateway where it can still be written, by its own revert timer where its
readings cannot be trusted), and the reason is logged and counted.

Before, the minimum SoC of 100 % killed the node's task group (again at every restart), a window
upside down was widened into one that charged past the device's own maximum, the meter jump
escaped ``IntervalCloser`` as a pydantic error and killed the controller with that interval never
in the ledger, and any unexpected error in the controller stopped the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from unittest.mock import patch

import pytest

from gateway.clock import Clock
from gateway.config import load_config
from gateway.home import GatewayNode, HomeEvent, IntervalClosed, SetpointWritten, running
from gateway.identity import load_certificate, load_key_file
from gateway.ledger import Ledger
from protocols.market import Agreed
from sim_devices.demo.broker import EmbeddedBroker
from sim_devices.demo.community import RunTiming, provision
from sim_devices.home import HomeSpec
from sim_devices.physics import MJ_PER_WH
from sim_devices.world import World

pytestmark = pytest.mark.realtime(cost_s=90)

SPEED = 10.0
TIMING = RunTiming(interval_s=60, gate_s=20, grace_s=5, poll_s=5, revert_s=30,
                   ramp_w_per_s=100_000, speed=SPEED)
HOME = HomeSpec(name="home-1", pv_peak_w=6000, base_load_w=300, soc_start_pct=50)
ROLES = ("meter", "battery", "pv")
START_S = 11 * 3600 + 20
GUARD_S = 90.0
"""Real seconds any one wait may take before the test fails: generous, nothing is timed."""
IDLE = 3  # 124 StorCtl_Mod with both bits and both rates 0: hold (the battery driver's zero)


@dataclass
class Home:
    world: World
    node: GatewayNode
    task: asyncio.Task[None]
    out: Path
    events: list[HomeEvent] = field(default_factory=list)

    @property
    def battery(self):  # the simulated battery's registers, as the gateway reads them
        return self.world.home(HOME.name).devices["battery"].points

    async def until(self, what: str, done: Callable[[], bool]) -> None:
        """Wait (real time, generously) for ``done``; the node must be running all along."""
        async with asyncio.timeout(GUARD_S):
            while not done():
                assert not self.task.done(), f"the gateway stopped waiting for {what}: " + (
                    repr(self.task.exception()) if not self.task.cancelled() else "cancelled")
                await asyncio.sleep(0.02)

    async def until_sim_s(self, seconds: float) -> None:
        target = self.world.now_s + seconds
        await self.until(f"{seconds} simulated s", lambda: self.world.now_s >= target)

    def commanded_idle(self) -> bool:
        """The gateway wrote the battery's hold command with its revert time."""
        p = self.battery
        return (p.get(124, "StorCtl_Mod") == IDLE and p.get(124, "InWRte") == 0
                and p.get(124, "OutWRte") == 0
                and p.get(124, "InOutWRte_RvrtTms") == TIMING.revert_s)

    def closed(self, k: int) -> IntervalClosed | None:
        return next((e for e in self.events
                     if isinstance(e, IntervalClosed) and e.interval == k), None)


@contextlib.asynccontextmanager
async def home(out: Path, *, before: Callable[[World], None] = lambda _w: None,
               ) -> AsyncIterator[Home]:
    """The home served, the broker up and its gateway running; ``before`` sets the devices'
    registers before the gateway first reads them (a device that boots that way)."""
    world = World(homes=[HOME], seed=3, speed=SPEED, start_s=START_S)
    before(world)
    async with EmbeddedBroker(port=0) as broker, world.serve() as served:
        addresses = {(HOME.name, role): served.address(HOME.name, role) for role in ROLES}
        [path] = provision(out, [HOME], addresses, broker_url=broker.url, timing=TIMING)
        config = load_config(path)
        certificate, _ = load_certificate(config.certificate_file)
        events: list[HomeEvent] = []
        node = GatewayNode(config=config, key=load_key_file(config.key_file),
                           certificate=certificate, clock=Clock(origin_ms=world.now_ms,
                                                                speed=SPEED),
                           on_event=events.append)
        async with running(node) as task:
            yield Home(world=world, node=node, task=task, out=out, events=events)
            assert not task.done(), "the gateway stopped"


def _backup_mode(world: World) -> None:
    points = world.home(HOME.name).devices["battery"].points
    points.put(802, "SoCMin", 10000)  # 100.00 %: nothing may be discharged
    points.put(802, "SoCMax", 10000)


async def test_a_battery_in_backup_mode_from_boot_is_held_idle_and_the_gateway_runs(
        tmp_path, caplog):
    """Minimum SoC 100 % from the first reading (the restart case): the node starts, commands
    the battery idle with its revert time every control period, logs the device's window once,
    counts it, and takes the battery back once the inverter leaves backup mode."""
    caplog.set_level(logging.INFO, logger="gateway.home")
    async with home(tmp_path, before=_backup_mode) as h:
        await h.until("a setpoint", lambda: any(isinstance(e, SetpointWritten)
                                                for e in h.events))
        await h.until_sim_s(4 * TIMING.poll_s)
        assert h.commanded_idle()
        assert h.world.home(HOME.name).battery.command_w == 0
        assert "battery held idle" in h.node.state.safe_reason
        assert "[100, 100] %" in h.node.state.safe_reason
        status = h.node.status()
        assert status.device_holds == {"battery": 1} and status.mode == "safe"
        held = [r.getMessage() for r in caplog.records if "held idle" in r.getMessage()]
        assert len(held) == 1 and "SoC window [100, 100] %" in held[0], held

        h.battery.put(802, "SoCMin", 1000)  # out of backup mode: 10 % again
        h.battery.put(802, "SoCMax", 9500)
        await h.until("the battery released", lambda: any(
            "released" in r.getMessage() for r in caplog.records))
        await h.until("a setpoint from the plan", lambda: h.node.state.safe_reason == "" or
                      h.node.state.safe_reason.startswith("no agreement"))
        assert h.node.status().device_holds == {"battery": 1}


@pytest.mark.parametrize(
    ("registers", "expected"),
    [
        pytest.param({"SoCMin": 8000, "SoCMax": 2000}, "held",
                     id="window-upside-down"),
        pytest.param({"SoCMin": 9600}, "held", id="min-above-our-max"),
        pytest.param({"SoC_SF": 0}, "stale", id="soc-past-100-pct"),
        pytest.param({"SoC_SF": None}, "stale", id="soc-scale-not-implemented"),
        pytest.param({"WHRtg": 0}, "runs", id="no-capacity"),
    ],
)
async def test_hostile_battery_registers_never_stop_the_gateway(tmp_path, registers, expected):
    """Once the gateway is driving the battery, its 802 registers turn hostile: held values
    are commanded idle by the gateway; unreadable ones make the battery stale, the poll failure
    names the point, and its revert timer takes it idle; a battery without a capacity is still
    driven inside the envelope."""
    async with home(tmp_path) as h:
        await h.until("a setpoint", lambda: any(isinstance(e, SetpointWritten)
                                                for e in h.events))
        for name, value in registers.items():
            h.battery.put(802, name, value)
        await h.until_sim_s(TIMING.revert_s + 8 * TIMING.poll_s)
        truth = h.world.home(HOME.name).battery
        status = h.node.status()
        if expected == "held":
            assert h.commanded_idle() and truth.command_w == 0
            assert "battery held idle" in h.node.state.safe_reason
            assert status.device_holds == {"battery": 1}
        elif expected == "stale":
            assert h.node.devices["battery"].poller.stale
            assert truth.command_w == 0  # its revert timer
            assert "battery stale" in h.node.state.safe_reason
            battery = status.devices["battery"]
            assert battery.failures >= 3 and "SoC" in (battery.last_error or ""), battery
        else:
            assert not h.node.devices["battery"].poller.stale and status.device_holds == {}
            assert h.node.envelope.contains(w=truth.command_w, soc_pct=truth.soc_pct)
        assert status.control_faults == {}


async def test_an_unexpected_error_in_the_controller_or_trader_is_counted_and_answered_safe(
        tmp_path, caplog):
    """An error nobody expected (injected here) in each control step and each plan: counted by
    task and type, logged with its traceback once, the battery commanded idle with its revert
    time and no bid made; once it stops, the gateway controls and bids again."""
    caplog.set_level(logging.INFO, logger="gateway.home")
    async with home(tmp_path) as h:
        await h.until("a setpoint", lambda: any(isinstance(e, SetpointWritten)
                                                for e in h.events))
        with (patch("gateway.home.battery.decide", side_effect=RuntimeError("injected")),
              patch("gateway.home.trader.Trader.plan", side_effect=RuntimeError("injected"))):
            bids_before = h.node.state.records.copy()
            await h.until_sim_s(TIMING.interval_s + 2 * TIMING.poll_s)
            assert h.commanded_idle() and h.world.home(HOME.name).battery.command_w == 0
            assert h.node.state.safe_reason.startswith("control fault (controller/RuntimeError")
            faults = h.node.status().control_faults
            assert faults["controller/RuntimeError"] >= 5 and faults["trader/RuntimeError"] >= 1
            tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
            assert len([t for t in tracebacks if "in the controller" in t]) == 1, tracebacks
            assert len([t for t in tracebacks if "in the trader" in t]) == 1, tracebacks
            assert not [k for k, r in h.node.state.records.items()
                        if r.plan is not None and k not in bids_before]
        await h.until("control again", lambda: "control fault" not in h.node.state.safe_reason)
        await h.until("a bid again", lambda: any(
            r.plan is not None for k, r in h.node.state.records.items() if k not in bids_before))


async def test_a_meter_jump_past_a_mwh_is_settled_undelivered_and_the_interval_is_in_the_ledger(
        tmp_path):
    """The meter's import counter jumps by 2 MWh in one interval (replaced or reset): that
    interval's block is written, settled as undelivered and saying why, counted, with no
    settlement of this node published for it; the next interval settles normally."""
    async with home(tmp_path) as h:
        first = h.node.timing.open_interval(h.world.now_ms) + 1
        await h.until("an agreed interval", lambda: isinstance(
            getattr(h.closed(first), "outcome", None), Agreed))
        sim = h.world.home(HOME.name)
        at = h.world.now_ms // (1000 * int(TIMING.interval_s))
        sim.state = replace(sim.state, meter=replace(
            sim.state.meter, import_mj=sim.state.meter.import_mj + 2_000_000 * MJ_PER_WH))
        # The meter's guard refuses the jump once and takes it at the next poll that confirms
        # it: in this interval or, near its end, in the next.
        await h.until("two more intervals closed", lambda: h.closed(at + 2) is not None)
        assert h.node.status().meter_rejections == {"meter-jump": 1}
        with Ledger.open(tmp_path / HOME.name / "state" / "ledger.db") as ledger:
            assert ledger.verify() == []
            blocks = {b.interval: b for b, _ in ledger.blocks()}
        [jumped] = [k for k in (at, at + 1) if "meter" in blocks[k].content]
        assert h.node.agent is not None
        assert HOME.name not in h.node.agent.signed_settlements(jumped)
    block = blocks[jumped]
    assert "settled as undelivered" in block.content["meter"]
    assert block.content["outcome"]["delivered_wh"] == 0 and "settlement" not in block.content
    for k in {at, at + 1, at + 2} - {jumped}:
        assert "meter" not in blocks[k].content and "settlement" in blocks[k].content
        assert abs(blocks[k].content["outcome"]["delivered_wh"]) < 1000
