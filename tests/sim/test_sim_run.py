"""``sim run``: a real process serving a scenario, read over Modbus, stopped by a signal."""

import argparse
import asyncio
import io
import os
import re
import signal
import sys

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from gateway.cli.sim import add_sim_parser, cmd_sim_run
from protocols.sunspec.devices import SUNS_MARKER
from sim_devices.runner import run_scenario
from sim_devices.scenario import parse_scenario
from tests._require import require

LINE = re.compile(r"^(?P<device>[a-z0-9-]+/[a-z]+) tcp://(?P<host>[\d.]+):(?P<port>\d+) \(unit 1\)"
                  r"(?: rtu://(?P<pty>\S+))?$")


async def _start(*args: str) -> tuple[asyncio.subprocess.Process, dict[str, re.Match[str]]]:
    """Start ``gridpeer sim run`` and read device lines up to the "serving" line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "sim", "run", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    devices = {}
    async with asyncio.timeout(30):
        while True:
            line = (await proc.stdout.readline()).decode()
            assert line, "the runner exited before serving"
            if line.startswith("serving "):
                break
            match = LINE.match(line.rstrip("\n"))
            assert match, line
            devices[match["device"]] = match
    return proc, devices


async def _stop(proc: asyncio.subprocess.Process, sig: int) -> tuple[str, str]:
    proc.send_signal(sig)
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode(), err.decode()


async def test_sim_run_serves_sunny_street_and_stops_cleanly_on_ctrl_c():
    proc, devices = await _start("sunny-street", "--speed", "120")
    try:
        assert len(devices) == 21  # 6 homes × meter, PV, battery; 3 flexible loads
        assert {d.split("/")[1] for d in devices} == {"meter", "pv", "battery", "flex"}
        meter = devices["home-1/meter"]
        async with AsyncModbusTcpClient(meter["host"], port=int(meter["port"])) as client:
            rr = await client.read_holding_registers(40000, count=2, device_id=1)
            assert tuple(rr.registers) == SUNS_MARKER
    finally:
        out, err = await _stop(proc, signal.SIGINT)
    assert "Traceback" not in err and err == ""
    assert out.strip().endswith("stopped")


async def test_sim_run_with_rtu_prints_ptys_that_answer_and_stops_on_sigterm():
    require(hasattr(os, "openpty"), "no pty support on this OS")
    proc, devices = await _start("dc-bus-cluster", "--rtu")
    try:
        assert len(devices) == 16 and all(d["pty"] for d in devices.values())
        client = AsyncModbusSerialClient(devices["home-2/dcdc"]["pty"], baudrate=115200,
                                         timeout=1, retries=1)
        assert await client.connect()
        try:
            rr = await client.read_holding_registers(40000, count=2, device_id=1)
            assert tuple(rr.registers) == SUNS_MARKER
        finally:
            client.close()
    finally:
        _, err = await _stop(proc, signal.SIGTERM)
    assert "Traceback" not in err


async def test_sim_run_with_a_bad_scenario_says_why_in_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[market]\ncommunity = "bad"\n[[homes]]\nname = "h"\n'
                   "battery_wh = -1\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "sim", "run", str(bad),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode == 1
    assert err.decode().strip() == f"gridpeer: {bad}: homes.0.battery_wh: must be > 0"


async def test_an_overloaded_feeder_line_is_reported_while_serving():
    scenario = parse_scenario({
        "name": "thin-cable", "start": "12:30", "speed": 120.0,
        "market": {"community": "thin-cable"},
        "feeder": {"lines": [{"bus": "end", "parent": "substation", "capacity_w": 2000,
                              "resistance_ohm": 0.2}]},
        "homes": [{"name": f"home-{i}", "bus": "end", "pv_peak_w": 6000, "base_load_w": 200,
                   "cloudiness": 0.0} for i in (1, 2)],
    }, source="test")
    out = io.StringIO()
    task = asyncio.create_task(run_scenario(scenario, stream=out))
    try:
        async with asyncio.timeout(10):
            while "overloaded" not in out.getvalue():
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    report = out.getvalue().splitlines()[-1]
    assert re.fullmatch(r"\d\d:\d\d feeder: line end overloaded: \d+ W of 2000 W \(\d+ %\), "
                        r"losses \d+ W", report), report


def test_add_sim_parser_registers_sim_run_on_a_cli():
    parser = argparse.ArgumentParser(prog="gridpeer")
    add_sim_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sim", "run", "feeder-100", "--speed", "5", "--dt-ms", "10000",
                              "--rtu", "--host", "0.0.0.0"])
    assert (args.scenario, args.speed, args.dt_ms, args.rtu, args.host) == (
        "feeder-100", 5.0, 10_000, True, "0.0.0.0")
    assert args.func is cmd_sim_run
    defaults = parser.parse_args(["sim", "run", "sunny-street"])
    assert (defaults.speed, defaults.dt_ms, defaults.rtu, defaults.host) == (
        None, None, False, "127.0.0.1")
    for bad in (["--speed", "0"], ["--dt-ms", "0"], ["--dt-ms", "1.5"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["sim", "run", "sunny-street", *bad])
