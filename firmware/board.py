"""The running device: config + HAL -> register bank, role code and its two Modbus faces.

``Board`` is the sans-I/O part: it builds the role's SunSpec map from that role's generated table
alone (``firmware/tables/<role>.py``, plus vendor model 64210 with the config error bits and, on a
meter, the tagged counters), the role code and an RTU server, and ``tick()`` runs the role's
periodic work (samples, reversion timers; on a meter a fresh tag).
``RtuFramer`` splits the RS-485 byte stream into frames by the 3.5-character silence the standard
prescribes. The coroutines at the end are the thin asyncio adapters, the same code under
MicroPython's ``asyncio`` and CPython's: ``serve_rtu`` polls the UART and ``run_ticks`` keeps
time; the Modbus TCP face is ``firmware/tcpface.py``.
"""

import asyncio

from firmware import config, metering
from firmware.compat import const, ticks_diff, ticks_us
from firmware.modbus.bank import RegisterBank
from firmware.modbus.rtu import RtuServer
from firmware.roles.common import Points, fill_common, role_table
from firmware.tables import BASE

_MAX_RTU = const(256)
_POLL_S = 0.001  # UART poll period: under the 1.75 ms gap of the fastest baud rates
SEQ_PATH = "/seq"


class RtuFramer:
    """Collects received bytes into one RTU frame, complete after 3.5 character times of silence.

    Modbus over serial line (V1.02, 2.5.1.1): t3.5 = 3.5 × 11 bits / baud; above 19200 baud a
    fixed 1750 µs, because a timer that short is too much load for a small UART interrupt. A frame
    longer than 256 bytes is noise: it is dropped whole, at the next silence.
    """

    def __init__(self, baud):
        self.t35_us = 1750 if baud > 19200 else (38_500_000 + baud - 1) // baud
        self._buf = bytearray(_MAX_RTU)
        self._n = 0
        self._overrun = False

    def feed(self, data):
        """Bytes just received (the caller restarts its silence clock)."""
        n = self._n
        if n + len(data) > _MAX_RTU:
            self._overrun = True
            return
        self._buf[n:n + len(data)] = data
        self._n = n + len(data)

    def frame(self, silent_us):
        """The frame received so far once the line has been silent ``silent_us``, else None."""
        if silent_us < self.t35_us or (self._n == 0 and not self._overrun):
            return None
        out = None if self._overrun else bytes(self._buf[0:self._n])
        self._n = 0
        self._overrun = False
        return out


def build_bank(role):
    """The role's SunSpec map with model 64210 between its last model and the end marker.

    Appending keeps every address the gateway knows (``DeviceMap.for_role``) where it was; a
    SunSpec scan finds the extra model and a reader that does not know it skips it by its L (the
    meter's own chain already ends with 64210). The bank starts as the generated table's
    ``IMAGE``; only that one role's table module is imported. Returns
    ``(bank, table, status_addr)``.
    """
    mod = role_table(role)
    bank = RegisterBank(BASE, mod.SIZE)
    bank.regs[:] = mod.IMAGE
    return bank, mod.TABLE, mod.STATUS


def _build_role(role, points, hal, serial, unit, tagger, status_addr):
    # Imported on demand: a board holds only its own role's code in RAM.
    if role == "meter":
        from firmware.roles.meter import MeterRole
        return MeterRole(points, front_end=hal.meter, serial=serial, unit=unit, tagger=tagger,
                         status_addr=status_addr)
    nameplate = hal.nameplate
    if role == "pv":
        from firmware.roles.pv import PvRole
        return PvRole(points, stage=hal.pv, clock=hal.clock, serial=serial, unit=unit,
                      rating_w=nameplate["rating_w"])
    if role == "battery":
        from firmware.roles.battery import BatteryRole
        return BatteryRole(points, stage=hal.battery, clock=hal.clock, serial=serial, unit=unit,
                           capacity_wh=nameplate["capacity_wh"],
                           max_charge_w=nameplate["max_charge_w"],
                           max_discharge_w=nameplate["max_discharge_w"],
                           soc_min_pct=nameplate["soc_min_pct"],
                           soc_max_pct=nameplate["soc_max_pct"])
    if role == "load":
        from firmware.roles.load import LoadRole
        return LoadRole(points, stage=hal.load, clock=hal.clock, serial=serial, unit=unit,
                        kind=nameplate["load_kind"], max_w=nameplate["load_max_w"])
    from firmware.roles.dcdc import DcdcRole
    return DcdcRole(points, stage=hal.dcdc, clock=hal.clock, serial=serial, unit=unit)


class Board:
    """One device: ``cfg`` (firmware/config.py) on ``hal`` (an object with ``clock``, the role's
    front end as ``meter``/``pv``/``battery``/``dcdc``/``load``, and ``nameplate``, a dict of
    the power stage's ratings). Never raises for a role it cannot build: it serves the common
    model and sets ``ERR_ROLE_CODE`` instead, so the installer can read why over Modbus.

    A meter with a key gets a ``TaggedCounter`` (``tagger``), which the meter role itself updates
    and publishes in model 64210 at the end of each tick, from the sample it just published."""

    def __init__(self, cfg, hal, *, seq_path=SEQ_PATH):
        self.cfg = cfg
        self.hal = hal
        self.error = cfg.error
        self.bank, table, self.status_addr = build_bank(cfg.role)
        self.points = Points(self.bank, table)
        metering.blank(self.bank, self.status_addr, self.error)
        self.tagger = None
        try:
            if cfg.role == "meter" and cfg.key is not None:
                self.tagger = metering.TaggedCounter(
                    cfg.key, cfg.device_id, seq=metering.load_seq(seq_path),
                    reserve=lambda upto: metering.save_seq(seq_path, upto))
            self.role = _build_role(cfg.role, self.points, hal, cfg.device_id, cfg.unit,
                                    self.tagger, self.status_addr)
        except Exception as exc:  # missing role module, bad nameplate, HAL without the stage
            print("board: cannot build role", cfg.role, ":", repr(exc))
            self.role = None
            self.tagger = None
            self.error |= config.ERR_ROLE_CODE
            # A fresh bank: the half-built role may have opened write windows or hooked writes.
            self.bank, table, self.status_addr = build_bank(cfg.role)
            self.points = Points(self.bank, table)
            self.points.blank()
            fill_common(self.points, role=cfg.role, serial=cfg.device_id, unit=cfg.unit)
            metering.blank(self.bank, self.status_addr, self.error)
        self.rtu = RtuServer(cfg.unit, self.bank)
        self.tick_errors = 0

    def tick(self):
        """The role's periodic work (a meter's includes its freshly tagged reading). A failing
        tick is counted (``tick_errors``) and the device keeps serving: the next may succeed."""
        if self.role is None:
            return
        try:
            self.role.tick()
        except Exception as exc:
            self.tick_errors += 1
            print("board: tick failed:", repr(exc))


async def serve_rtu(board, port):
    """Answer Modbus RTU on ``port`` (``read()``/``write(frame)``, e.g.
    ``firmware.hal.rs485.Rs485``, which owns the direction pin around each reply)."""
    framer = RtuFramer(board.cfg.baud)
    last_rx = ticks_us()
    while True:
        data = port.read()
        now = ticks_us()
        if data:
            framer.feed(data)
            last_rx = now
        else:
            frame = framer.frame(ticks_diff(now, last_rx))
            if frame is not None:
                reply = board.rtu.feed(frame)
                if reply is not None:
                    port.write(reply)
        await asyncio.sleep(_POLL_S)


async def run_ticks(board, period_s, clients=None):
    """Call ``board.tick()`` every ``period_s`` (reversion timers count whole seconds), and close
    the TCP ``clients`` (``firmware.tcpface.Clients``) gone idle: the tick is the board's one
    clock."""
    while True:
        board.tick()
        if clients is not None:
            clients.expire()
        await asyncio.sleep(period_s)
