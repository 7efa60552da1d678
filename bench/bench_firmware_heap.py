"""A whole device's heap on real MicroPython (the unix port), per role: boot, then 1,000 requests.

Each role's board runs as its own process (``micropython -X heapsize=... -m firmware.unix``, see
tests/firmware/unix_device.py) from the firmware compiled with mpy-cross, as ``gridpeer flash``
puts it on a board, and serves Modbus TCP on loopback. A pymodbus client sends 1,000 reads that
sweep the role's whole register map in 125-register requests, as a gateway's polls do. Printed
per role: ``gc.mem_alloc()``/``gc.mem_free()`` after ``gc.collect()`` at boot and after the
requests (at a 256 KiB heap), and the smallest ``-X heapsize`` (1 KiB steps, by bisection) at
which the board boots its role and answers all 1,000 requests.

Baseline, measured in the same run on the same interpreter: the Modbus core alone (the role's
register bank from its generated table and one ``TcpServer``, fed the same 1,000 requests in
process, no asyncio, no sockets, no role code) — what the docs quoted before for the firmware.
The ratio (core / board, < 1) says how much of a board's heap the rest takes: asyncio and its
streams, the TCP face, the role code, the config and the unix entry (~2 KB a board lacks).

    python -m bench.bench_firmware_heap            # ~1-2 min
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from pymodbus.client import ModbusTcpClient

from bench._report import line, machine
from firmware.roles.common import role_table
from firmware.tables import BASE
from protocols.sunspec.devices import ROLE_MODELS
from tests.firmware.unix_device import flashed, require_micropython, unix_device

REQUESTS = 1_000
MEASURE_HEAP = "256K"
_MAX_READ = 125
_ERR_ROLE_CODE = 0x0100

CORE = """
import gc, struct
from firmware.modbus.bank import RegisterBank
from firmware.modbus.tcp import TcpServer
from firmware.roles.common import role_table
from firmware.tables import BASE
table = role_table(ROLE)
bank = RegisterBank(BASE, table.SIZE)
bank.regs[:] = table.IMAGE
server = TcpServer(bank)
gc.collect()
print("BOOT", gc.mem_alloc(), gc.mem_free())
request = bytearray(12)
for i in range(REQUESTS):
    addr, count = READS[i % len(READS)]
    struct.pack_into(">HHHBBHH", request, 0, i & 0xFFFF, 0, 6, 1, 3, addr, count)
    reply = server.feed(request)
    if len(reply) != 9 + 2 * count:
        raise SystemExit("bad reply to request %d" % i)
gc.collect()
print("AFTER", gc.mem_alloc(), gc.mem_free())
"""


def reads(role: str) -> list[tuple[int, int]]:
    """(address, count) reads that cover the role's whole map, at most 125 registers each."""
    size = role_table(role).SIZE
    return [(BASE + at, min(_MAX_READ, size - at)) for at in range(0, size, _MAX_READ)]


def core(binary: str, root: Path, role: str, heap: str) -> tuple[int, int, int, int] | None:
    """(alloc, free) after building the core and after the requests, or None if it ran out."""
    script = (CORE.replace("ROLE", repr(role)).replace("REQUESTS", str(REQUESTS))
              .replace("READS", repr(reads(role))))
    run = subprocess.run([binary, "-X", f"heapsize={heap}", "-c", script], cwd=root,
                         capture_output=True, text=True, timeout=60, check=False)
    if run.returncode != 0:
        return None
    figures = {ln.split()[0]: ln.split()[1:] for ln in run.stdout.splitlines()}
    (boot_alloc, boot_free), (alloc, free) = figures["BOOT"], figures["AFTER"]
    return int(boot_alloc), int(boot_free), int(alloc), int(free)


def board(root: Path, role: str, heap: str, *, folder: Path) -> tuple[int, int, int, int] | None:
    """The board's (alloc, free) after boot and after the requests, or None if it cannot boot its
    role or answer every request."""
    try:
        with unix_device(role, folder, heap=heap, status_s=0.2, root=root) as dev:
            if not _role_built(dev.output):
                return None
            boot = dev.next_status()
            client = ModbusTcpClient("127.0.0.1", port=dev.port, timeout=2, retries=0)
            if not client.connect():
                return None
            try:
                plan = reads(role)
                for i in range(REQUESTS):
                    addr, count = plan[i % len(plan)]
                    reply = client.read_holding_registers(addr, count=count, device_id=1)
                    if reply.isError() or len(reply.registers) != count:
                        return None
            finally:
                client.close()
            after = dev.next_status()
    except Exception:  # it did not boot, or died on the way (MemoryError)
        return None
    return boot.alloc, boot.free, after.alloc, after.free


def _role_built(output: list[str]) -> bool:
    """False when the boot line (``main: ROLE ID unit U baud B error 0xNNNN``) carries
    ERR_ROLE_CODE: too little heap to build the role, so the board serves only model 1."""
    boot = next(ln for ln in output if ln.startswith("main: ") and " error 0x" in ln)
    return not int(boot.rsplit("0x", 1)[1], 16) & _ERR_ROLE_CODE


def smallest(works: Callable[[str], object], lo_k: int, hi_k: int) -> int:
    """The smallest heap in KiB in (lo_k, hi_k] for which ``works(f"{k}K")`` is not None."""
    if works(f"{hi_k}K") is None:
        raise SystemExit(f"does not run even at {hi_k} KiB")
    while hi_k - lo_k > 1:
        mid = (lo_k + hi_k) // 2
        if works(f"{mid}K") is None:
            lo_k = mid
        else:
            hi_k = mid
    return hi_k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roles", nargs="*", default=list(ROLE_MODELS))
    args = parser.parse_args()
    binary = require_micropython()
    print(machine())
    version = subprocess.run([binary, "-c", "import sys; print(sys.version)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    print(f"micropython unix port {version}; firmware compiled with mpy-cross; "
          f"{REQUESTS:,} reads of 125 registers or fewer sweeping each map")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        root = flashed(folder)
        for role in args.roles:
            base = core(binary, root, role, MEASURE_HEAP)
            dev = board(root, role, MEASURE_HEAP, folder=folder)
            if base is None or dev is None:
                raise SystemExit(f"{role}: did not run at {MEASURE_HEAP}")
            core_min = smallest(functools.partial(core, binary, root, role), 4, 256)
            board_min = smallest(functools.partial(board, root, role, folder=folder), 16, 256)
            print(f"{role}: board alloc/free after boot {dev[0]:,}/{dev[1]:,} B, after "
                  f"{REQUESTS:,} requests {dev[2]:,}/{dev[3]:,} B (heap {MEASURE_HEAP}); "
                  f"Modbus core alone {base[0]:,}/{base[1]:,} B, {base[2]:,}/{base[3]:,} B")
            print(line(f"{role}: live heap after boot", dev[0], "B",
                       "Modbus core alone", base[0], lower_is_better=True))
            print(line(f"{role}: live heap after {REQUESTS:,} requests", dev[2], "B",
                       "Modbus core alone", base[2], lower_is_better=True))
            print(line(f"{role}: smallest -X heapsize serving {REQUESTS:,} requests",
                       board_min * 1024, "B", "Modbus core alone", core_min * 1024,
                       lower_is_better=True))


if __name__ == "__main__":
    main()
