"""CPython (and MicroPython) fake of the HAL in ``firmware/hal/__init__.py``.

Not a mock: each fake is a plain object holding the values a real front end would measure, which
the simulator (``sim_devices``) or a test sets, and recording what the role code commanded, which
the simulator's physics then follows. Role code cannot tell it from the board.
"""


class FakeClock:
    """Monotonic milliseconds that only move when the simulator says so (``now_ms``)."""

    def __init__(self, now_ms=0):
        self.now_ms = now_ms

    def ticks_ms(self):
        return self.now_ms

    def ticks_diff(self, new, old):
        return new - old


class FakeUart:
    """A UART: receive side fed by ``inject``, transmit side kept in ``sent``."""

    def __init__(self):
        self._rx = bytearray()
        self.sent = bytearray()
        self.flushed = 0

    def inject(self, data):
        self._rx += data

    def read(self):
        if not self._rx:
            return None
        data = bytes(self._rx)
        self._rx = bytearray()
        return data

    def write(self, buf):
        self.sent += buf
        return len(buf)

    def flush(self):
        self.flushed += 1


class FakePin:
    """An output pin that logs every level it was driven to, with what the UART had sent by then."""

    def __init__(self, uart=None):
        self._uart = uart
        self.level = 0
        self.history = []

    def value(self, v=None):
        if v is None:
            return self.level
        self.level = 1 if v else 0
        self.history.append((self.level, len(self._uart.sent) if self._uart else 0))
        return None


class FakeMeterIC:
    """Metering front end: the simulator writes the readings and the IC's energy accumulators."""

    def __init__(self):
        self.w = 0
        self.v_x10 = 2300
        self.a_x100 = 0
        self.hz_x100 = 5000
        self.import_wh = 0
        self.export_wh = 0

    def sample(self):
        return self.w, self.v_x10, self.a_x100, self.hz_x100

    def energy_wh(self):
        return self.import_wh, self.export_wh


class FakePvStage:
    """PV inverter power stage: the simulator writes output; role code writes ``limit_w``."""

    def __init__(self):
        self.w = 0
        self.v_x10 = 2300
        self.a_x100 = 0
        self.hz_x100 = 5000
        self.injected_wh = 0
        self.absorbed_wh = 0
        self.limit_w = None

    def sample(self):
        return self.w, self.v_x10, self.a_x100, self.hz_x100

    def energy_wh(self):
        return self.injected_wh, self.absorbed_wh

    def set_limit_w(self, w):
        self.limit_w = w


class FakeBatteryStage:
    """Battery inverter + BMS: the simulator writes measurements; role code writes ``command_w``."""

    def __init__(self):
        self.w = 0
        self.v_x10 = 500
        self.a_x100 = 0
        self.soc_pct_x100 = 5000
        self.command_w = 0

    def sample(self):
        return self.w, self.v_x10, self.a_x100, self.soc_pct_x100

    def set_power_w(self, w):
        self.command_w = w


class FakeDcStage:
    """DC-DC converter stage: the simulator writes bus readings; role code writes the command."""

    def __init__(self):
        self.w = 0
        self.bus_v_x10 = 3500
        self.a_x100 = 0
        self.tripped = False
        self.mode = 0
        self.a_set_x100 = 0
        self.v_set_x10 = 3500

    def sample(self):
        return self.w, self.bus_v_x10, self.a_x100, self.tripped

    def command(self, mode, a_x100, v_x10):
        self.mode = mode
        self.a_set_x100 = a_x100
        self.v_set_x10 = v_x10


class FakeLoadStage:
    """Controllable load (EV charger, appliance): the simulator writes what the load draws and
    needs (and a V2G charger's pack: ``soc_x10``, ``capacity_wh``, ``discharge_w``); role code
    writes ``limit_w`` (None = the device's own default) and ``discharge_set_w``."""

    def __init__(self):
        self.w = 0
        self.connected = False
        self.need_wh = 0
        self.deadline_min = -1
        self.total_wh = 0
        self.limit_w = None
        self.soc_x10 = -1
        self.capacity_wh = 0
        self.discharge_w = 0
        self.discharge_set_w = 0

    def sample(self):
        return self.w, self.connected, self.need_wh, self.deadline_min

    def energy_wh(self):
        return self.total_wh

    def set_limit_w(self, w):
        self.limit_w = w

    def pack(self):
        return self.soc_x10, self.capacity_wh, self.discharge_w

    def set_discharge_w(self, w):
        self.discharge_set_w = w
