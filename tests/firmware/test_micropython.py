"""The firmware core on real MicroPython (WebAssembly port under Node.js) answers 1,000+
pymodbus-built requests byte for byte as it does under CPython, within an ESP32 heap budget."""

import contextlib
import io
import shutil
import subprocess
from pathlib import Path

import pytest

from protocols.sunspec.devices import DeviceMap
from tests._require import require
from tests.firmware import frames, mp_driver

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
HARNESS = Path(__file__).with_name("mp_harness.mjs")
ESP32_BUDGET = 64 * 1024

pytestmark = pytest.mark.micropython


def test_micropython_matches_cpython_byte_for_byte(tmp_path: Path) -> None:
    node = shutil.which("node")
    require(node is not None, "node is not installed")
    require((PACKAGE / "micropython.mjs").exists(), "run `npm install` for the MicroPython port")
    bank, writable = mp_driver.build()
    records = frames.workload(seed=3, n=1000, base=bank.base, size=bank.size, writable=writable)
    path = tmp_path / "frames.bin"
    path.write_bytes(b"".join(records))

    cpython = io.StringIO()
    with contextlib.redirect_stdout(cpython):
        mp_driver.main(str(path))
    expected = cpython.getvalue().splitlines()

    run = subprocess.run([node, str(HARNESS), str(ROOT), str(path), str(ESP32_BUDGET)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    heap = [line for line in lines if line.startswith("HEAP ")]
    replies = [line for line in lines if not line.startswith("HEAP ")]

    assert len(replies) == len(records) >= 1000
    assert replies == expected
    answered = sum(reply != "-" for reply in replies)
    assert 0 < answered < len(replies), "workload must mix replies and silence"

    _, requests, live, peak = heap[0].split()
    print(f"\nMicroPython {requests} requests: live heap {live} B after gc.collect(), "
          f"peak {peak} B during a request (ESP32 budget {ESP32_BUDGET} B)")
    assert int(requests) == len(records)
    assert int(live) <= int(peak) < ESP32_BUDGET


def test_driver_control_offsets_match_model_124() -> None:
    dmap = DeviceMap.for_role("battery")
    base = dmap.block(124).address
    assert mp_driver.addresses() == tuple(
        dmap.address(124, name) for name in ("StorCtl_Mod", "InWRte", "ChaGriSet"))
    assert (mp_driver.OFF_FIRST, mp_driver.OFF_LAST) == (
        dmap.address(124, "StorCtl_Mod") - base, dmap.address(124, "ChaGriSet") - base)
