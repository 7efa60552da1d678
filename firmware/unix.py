"""A board on MicroPython's unix port: the firmware as a network device on a PC (tests only: a
board boots ``main.py``).

    micropython [-X heapsize=128K] -m firmware.unix CONFIG.json [--seq PATH] [--uart-fd N]
        [--host 127.0.0.1] [--idle-s S] [--status-s S] [--free BYTES]

Runs ``firmware/main.py``'s ``start`` on the fake power stages: Modbus TCP on the config's
``tcp_port``, the role's tick and, with ``--uart-fd``, Modbus RTU on the master end of a pty the
caller opened and passed down (a gateway or pymodbus opens the other end as its serial port).
``--status-s`` prints ``STATUS <mem_alloc> <mem_free> <open> <served> <refused> <expired> <reset>
<starved>`` (the heap after ``gc.collect()``, then ``tcpface.Clients``' counters) at boot and
every S seconds; ``--free`` holds heap until only BYTES are free, as on a board whose heap is
nearly full, until a line arrives on stdin (tests/firmware/unix_device.py,
bench/bench_firmware_heap.py).
"""

import asyncio
import gc
import select
import sys

from firmware import main, tcpface
from firmware.compat import const

_MAX_RTU = const(256)


class PtyUart:
    """``machine.UART``'s ``read``/``write``/``flush`` over a pty master file descriptor (the unix
    port has no ``machine.UART``), and the driver-enable pin a pty does not have (``value``).

    ``read`` must not block, like a UART opened with ``timeout=0``; a unix ``FileIO`` read of n
    bytes waits for all n, so it takes one byte at a time while ``poll`` says more are waiting.
    """

    def __init__(self, fd):
        self._f = open(fd, "r+b")
        self._poll = select.poll()
        self._poll.register(self._f, select.POLLIN)
        self._one = bytearray(1)
        self._buf = bytearray(_MAX_RTU)

    def read(self):
        n = 0
        try:
            while n < _MAX_RTU and self._poll.poll(0):
                if not self._f.readinto(self._one):
                    break
                self._buf[n] = self._one[0]
                n += 1
        except OSError:  # EIO: nobody holds the other end; a UART just hears nothing
            pass
        return bytes(self._buf[0:n]) if n else None

    def write(self, buf):
        return self._f.write(buf)

    def flush(self):
        pass  # a pty write is with the kernel when it returns

    def value(self, v=None):
        return 0


def _options(argv):
    opts = {"--seq": "seq", "--uart-fd": None, "--host": "127.0.0.1", "--idle-s": tcpface.IDLE_S,
            "--status-s": None, "--free": None}
    if len(argv) < 2 or len(argv) % 2:
        raise SystemExit("usage: micropython -m firmware.unix CONFIG.json [--option value]...")
    for i in range(2, len(argv), 2):
        if argv[i] not in opts:
            raise SystemExit("unknown option " + argv[i])
        opts[argv[i]] = argv[i + 1]
    return argv[1], opts


async def _squeeze(free):
    """Hold heap in small pieces until only ``free`` bytes are left, as on a board whose heap is
    nearly full, until a line arrives on stdin: then give it all back."""
    held = []
    gc.collect()
    while gc.mem_free() > free:
        held.append(bytearray(240))
    await asyncio.StreamReader(sys.stdin).readline()
    held = None
    gc.collect()
    print("SQUEEZE over")


async def _status(clients, period_s):
    while True:
        gc.collect()
        print("STATUS", gc.mem_alloc(), gc.mem_free(), clients.open, clients.served,
              clients.refused, clients.expired, clients.reset, clients.starved)
        await asyncio.sleep(period_s)


async def _run(argv):
    path, opts = _options(argv)
    hal = main.FakeHal()
    if opts["--uart-fd"] is not None:
        hal.uart = hal.de = PtyUart(int(opts["--uart-fd"]))
    _, _, clients = await main.start(config_path=path, hal=hal, seq_path=opts["--seq"], tcp=True,
                                     host=opts["--host"], idle_s=float(opts["--idle-s"]))
    if opts["--free"] is not None:
        asyncio.create_task(_squeeze(int(opts["--free"])))
    if opts["--status-s"] is not None:
        asyncio.create_task(_status(clients, float(opts["--status-s"])))
    while True:
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(_run(sys.argv))
