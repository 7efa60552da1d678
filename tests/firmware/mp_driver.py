"""Feed recorded request frames to the firmware core and print every reply as hex.

Runs unchanged under MicroPython (inside tests/firmware/mp_harness.mjs) and CPython, so the two
outputs can be compared byte for byte. The device is a battery bank built from the generated
``firmware/tables/battery.py`` (its boot image) with model 124's controls writable and a write
hook that refuses an out-of-range InWRte (exception 03) and fails on ChaGriSet = 99
(exception 04), as role code would.
"""

import gc

from firmware.modbus.bank import RegisterBank
from firmware.modbus.rtu import RtuServer
from firmware.modbus.tcp import TcpServer
from firmware.roles.common import role_table
from firmware.tables import BASE

# Model 124's control points, as offsets from its ID register: StorCtl_Mod (first control),
# InWRte, ChaGriSet (last). The role's table names only what the role code uses, so these are
# fixed here; tests/firmware/test_micropython.py checks them against protocols' DeviceMap.
OFF_FIRST, OFF_IN_W, OFF_LAST = 5, 13, 17


def addresses():
    """(first control, InWRte, ChaGriSet) register addresses in the battery's map."""
    base = role_table("battery").TABLE[124][0]
    return base + OFF_FIRST, base + OFF_IN_W, base + OFF_LAST


def build():
    table = role_table("battery")
    bank = RegisterBank(BASE, table.SIZE)
    bank.regs[:] = table.IMAGE
    first, in_w, cha_gri = addresses()
    bank.allow_write(first, cha_gri - first + 1)

    def on_write(addr, count):
        if addr <= in_w < addr + count and not -10000 <= bank.get_signed(in_w) <= 10000:
            return 3
        if addr <= cha_gri < addr + count and bank.get(cha_gri) == 99:
            raise RuntimeError("power stage did not answer")
        return 0

    bank.on_write(on_write)
    return bank, (first, cha_gri - first + 1)


class _Run:
    """The device, its three connections (one RTU, two TCP) and the frames file being replayed."""

    def __init__(self, path):
        self.bank, _ = build()
        self.servers = (RtuServer(1, self.bank), TcpServer(self.bank), TcpServer(self.bank))
        self.file = open(path, "rb")
        self.requests = 0
        self.peak = 0


_run = None


def setup(path):
    global _run
    _run = _Run(path)


def step():
    """Replay one record; False at the end.

    Each call collects first, so the heap measured after the request is the live set plus what
    one request allocates: the RAM a board needs when it collects between requests. (The
    WebAssembly port only frees memory from a fresh top-level call, so its harness calls this
    once per record rather than looping inside Python.)
    """
    measure = hasattr(gc, "mem_alloc")  # MicroPython only; CPython's collect is slow and moot
    if measure:
        gc.collect()
    head = _run.file.read(3)
    if not head:
        _run.file.close()
        return False
    frame = _run.file.read((head[1] << 8) | head[2])
    reply = _run.servers[head[0]].feed(frame)
    if measure:
        _run.peak = max(_run.peak, gc.mem_alloc())
    print(reply.hex() if reply else "-")
    _run.requests += 1
    return True


def report():
    """On MicroPython: HEAP <requests> <live bytes after collect> <peak bytes during a request>."""
    gc.collect()
    if hasattr(gc, "mem_alloc"):
        print("HEAP", _run.requests, gc.mem_alloc(), _run.peak)


def main(path):
    setup(path)
    while step():
        pass
    report()
