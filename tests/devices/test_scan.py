"""``gridpeer devices scan`` as an installer runs it: the real CLI in its own process, against
pysunspec2-built maps served over Modbus TCP (an inverter at unit 1, its meter at unit 2, and
pysunspec2's draft-era DER at unit 3)."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.devices.maps import der_1547, inverter, meter
from tests.devices.served import Served, framed, serve


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Served]:
    maps = {1: framed(inverter(103)), 2: framed(meter(213)), 3: framed(der_1547(tmp_path))}
    async with serve(maps) as served:
        yield served


async def gridpeer(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_scan_lists_the_models_and_what_each_kind_would_read_and_command(
        site: Served) -> None:
    status, out, _ = await gridpeer("devices", "scan", site.url, "--unit", "1")
    assert status == 0
    assert f"{site.url} unit 1: SunSpec map at 40000, 7 models" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert [row[0] for row in rows if row[0].isdigit()] == [
        "1", "103", "120", "121", "122", "123", "160"]
    assert ["160", "48", "40254", "mppt"] in rows
    assert ("as pv: yes, through SunSpec inverter models (103 measurement, 120 nameplate, "
            "121 settings, 123 controls)") in out
    assert "first reading: power_w -2500, energy_wh 1234567, rated_w 5000, limit_pct None" in out
    assert ("commands the output limit through 123 WMaxLimPct_RvrtTms, WMaxLimPct, WMaxLim_Ena"
            in out)
    assert "as meter: no. Meter needs one of SunSpec models [203" in out
    assert "as battery: no. Battery needs one of SunSpec models [802, 713]" in out
    assert site.writes == {1: [], 2: [], 3: []}  # a scan only reads


async def test_scan_of_one_kind_exits_0_only_when_the_gateway_reads_and_commands_it(
        site: Served) -> None:
    status, out, _ = await gridpeer("devices", "scan", site.url, "--unit", "2", "--kind", "meter")
    assert status == 0
    assert "as meter: yes, through SunSpec meter model 213" in out
    assert "first reading: power_w -1500, import_wh 5000, export_wh 700, voltage_v 230.1" in out
    assert "as pv" not in out

    status, out, err = await gridpeer("devices", "scan", site.url, "--unit", "3", "--kind", "pv")
    assert status == 1
    assert "as pv: read only, through IEEE 1547 DER models" in out
    assert ("commands no output limit: model 704 leaves WMaxLimPctEna, WMaxLimPct, WMaxLimPct_SF"
            in out)
    assert "model 701 ACType: 3 is none of its symbols (a point the driver does not read" in err

    status, out, _ = await gridpeer("devices", "scan", site.url, "--unit", "3", "--kind", "battery")
    assert status == 1
    assert "first reading: soc_pct nan, power_w -9800, max_charge_w 0, max_discharge_w 0" in out
    assert "commands no charge/discharge power: model 704 leaves WSetEnaRvrt" in out
    assert site.writes == {1: [], 2: [], 3: []}


async def test_scan_of_an_address_nothing_answers_on_is_one_line_and_exit_1() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        status, out, err = await gridpeer("devices", "scan", f"tcp://127.0.0.1:{port}",
                                          "--first-timeout", "1")
    assert (status, out) == (1, "")
    assert err.startswith("gridpeer: cannot open modbus-tcp 127.0.0.1:") and err.count("\n") == 1


@pytest.mark.parametrize("url", ["127.0.0.1:502", "tcp://127.0.0.1", "udp://x:1"])
async def test_scan_refuses_a_url_it_cannot_open_in_one_line(url: str) -> None:
    status, out, err = await gridpeer("devices", "scan", url)
    assert status == 1 and out == ""
    assert err == f"gridpeer: {url!r}: give tcp://HOST:PORT or rtu:///dev/ttyUSB0?baud=9600\n"
