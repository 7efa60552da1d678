"""Boot entry: MicroPython runs ``/main.py`` after boot; ``gridpeer flash`` copies this file there.

Reads the config, builds the board on its HAL and runs three loops under ``asyncio``: RTU on
RS-485, Modbus TCP (where the port has a network stack, firmware/tcpface.py) and the role's tick
(which also closes idle TCP clients). Nothing here may raise at boot (a crash at boot reboots
into the same crash), so bad config becomes defaults and an error register (firmware/config.py)
and a missing role becomes ``ERR_ROLE_CODE``.
"""

import asyncio

from firmware import board, config
from firmware.compat import ticks_diff, ticks_ms
from firmware.hal.rs485 import Rs485

TICK_S = 0.5


class FakeHal:
    """The CPython/WebAssembly stand-in for a board: every stage a fake (firmware/hal/fake.py)
    on a clock that follows the interpreter's own, so reversion timers run as on a board."""

    def __init__(self):
        from firmware.hal import fake

        self.clock = _TicksClock()
        self.uart = fake.FakeUart()
        self.de = fake.FakePin(self.uart)
        self.meter = fake.FakeMeterIC()
        self.pv = fake.FakePvStage()
        self.battery = fake.FakeBatteryStage()
        self.dcdc = fake.FakeDcStage()
        self.load = fake.FakeLoadStage()
        self.nameplate = {"rating_w": 5000, "capacity_wh": 10000, "max_charge_w": 5000,
                          "max_discharge_w": 5000, "soc_min_pct": 10, "soc_max_pct": 95,
                          "load_kind": 2, "load_max_w": 7400}


class _TicksClock:
    def __init__(self):
        self.ticks_ms = ticks_ms
        self.ticks_diff = ticks_diff


def load_hal(baud):
    """The board's HAL (``firmware/hal/board.py``: ``make(baud)``), or the fakes where there is
    none (the WebAssembly port, CPython, a board flashed before its HAL exists)."""
    try:
        from firmware.hal import board as hal_board
    except ImportError:
        print("main: no firmware/hal/board.py, running on the fake HAL")
        return FakeHal()
    return hal_board.make(baud)


def has_network():
    """True where the port has sockets (not the WebAssembly port)."""
    try:
        import socket  # noqa: F401
    except ImportError:
        return False
    return True


async def start(*, config_path=config.PATH, hal=None, seq_path=board.SEQ_PATH, tcp=None,
                tick_s=TICK_S, host="0.0.0.0", idle_s=None):
    """Build the board and start its loops on the running event loop.

    Returns ``(board, tasks, clients)``: ``clients`` are the Modbus TCP client slots
    (``firmware.tcpface.Clients``, idle after ``idle_s``, default ``tcpface.IDLE_S``), or None
    when ``tcp`` is False (default: whether the port has a network stack). Tests and the unix
    port (firmware/unix.py) call this; ``run()`` is the board's own path.
    """
    cfg = config.load(config_path)
    if hal is None:
        hal = load_hal(cfg.baud)
    dev = board.Board(cfg, hal, seq_path=seq_path)
    print("main:", cfg.role, cfg.device_id, "unit", cfg.unit, "baud", cfg.baud,
          f"error 0x{dev.error:04x}")
    port = Rs485(hal.uart, hal.de, cfg.baud)
    tasks = [asyncio.create_task(board.serve_rtu(dev, port))]
    if tcp is None:
        tcp = has_network()
    clients = None
    if tcp:
        from firmware import tcpface  # only a port with sockets holds the TCP face in RAM

        clients = tcpface.Clients() if idle_s is None else tcpface.Clients(idle_s)
        sock = tcpface.listen(host, cfg.tcp_port)
        tasks.append(asyncio.create_task(tcpface.serve_tcp(dev, sock, clients)))
        print("main: Modbus TCP on port", cfg.tcp_port)
    tasks.append(asyncio.create_task(board.run_ticks(dev, tick_s, clients)))
    return dev, tasks, clients


async def _forever():
    await start()
    while True:
        await asyncio.sleep(3600)


def run():
    asyncio.run(_forever())


if __name__ == "__main__":
    run()
