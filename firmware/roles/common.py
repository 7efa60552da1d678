"""What every role shares: typed access to SunSpec points in a RegisterBank, reversion timers,
and the common model (1).

MicroPython-compatible: no typing, no dataclasses, integers only. The point table a role gets is
plain data, ``{model_id: (id_address, {point_name: spec})}``. On the board it is the generated
``firmware/tables/<role>.py`` (``role_table``), whose specs are packed ints
(``offset << 10 | size << 5 | type code``) naming only the points the role code uses; in the
simulator it is built from ``protocols.sunspec.devices.DeviceMap`` (``sim_devices/world.py``) with
``(offset, type, size)`` tuples for every point. Both place every point at the address the gateway
expects.
"""

from firmware.tables import TYPES

# Raw "not implemented" value per SunSpec type (what a reader decodes as None).
_UNIMPL = {
    "int16": 0x8000, "sunssf": 0x8000, "uint16": 0xFFFF, "count": 0xFFFF, "enum16": 0xFFFF,
    "bitfield16": 0xFFFF, "acc16": 0, "pad": 0x8000,
    "int32": 0x80000000, "uint32": 0xFFFFFFFF, "enum32": 0xFFFFFFFF, "bitfield32": 0xFFFFFFFF,
    "acc32": 0, "ipaddr": 0, "float32": 0x7FC00000,
    "int64": 0x8000000000000000, "uint64": 0xFFFFFFFFFFFFFFFF, "acc64": 0,
    "float64": 0x7FF8000000000000, "eui48": 0xFFFFFFFFFFFF, "ipv6addr": 0,
}
_SIGNED = ("int16", "sunssf", "int32", "int64")

# 124 / 704 / 64200 reversion: a setpoint written with revert time 0 still reverts after this
# many seconds, because a setpoint that never reverts is what keeps a battery discharging after
# its gateway died (docs/architecture.md, Reversion).
DEFAULT_REVERT_S = 300


class RoleError(ValueError):
    """A role was built with a point table or nameplate it cannot serve."""


def role_table(role):
    """The generated table module of ``role`` (``firmware/tables``), and only that one: a board
    keeps one role's layout in RAM. Raises ``RoleError`` for a role without a table."""
    if role == "meter":
        from firmware.tables import meter as table
    elif role == "pv":
        from firmware.tables import pv as table
    elif role == "battery":
        from firmware.tables import battery as table
    elif role == "dcdc":
        from firmware.tables import dcdc as table
    elif role == "load":
        from firmware.tables import load as table
    else:
        raise RoleError("no SunSpec table for role " + repr(role))
    return table


class Points:
    """Typed read/write of named SunSpec points in a RegisterBank."""

    def __init__(self, bank, table):
        self.bank = bank
        self._table = table

    def addr(self, model, name):
        """Absolute register address of ``name`` in ``model``."""
        return self._spec(model, name)[0]

    def _spec(self, model, name):
        """``(address, type, size)`` of a point, from either table shape."""
        try:
            base, points = self._table[model]
            spec = points[name]
        except KeyError:
            raise RoleError(f"point table has no {name} in model {model}") from None
        if isinstance(spec, int):
            return base + (spec >> 10), TYPES[spec & 31], (spec >> 5) & 31
        return base + spec[0], spec[1], spec[2]

    def put(self, model, name, value):
        """Write ``value`` (raw, already scaled int or str; None = not implemented) to a point."""
        addr, ptype, size = self._spec(model, name)
        if ptype == "string":
            data = (value or "").encode()[: 2 * size]
            data = data + bytes(2 * size - len(data))
            for i in range(size):
                self.bank.set(addr + i, (data[2 * i] << 8) | data[2 * i + 1])
            return
        raw = _UNIMPL[ptype] if value is None else value & ((1 << (16 * size)) - 1)
        for i in range(size):
            self.bank.set(addr + i, (raw >> (16 * (size - 1 - i))) & 0xFFFF)

    def get(self, model, name):
        """Raw value of a numeric point (signed types sign-extended), None if not implemented."""
        addr, ptype, size = self._spec(model, name)
        raw = 0
        for i in range(size):
            raw = (raw << 16) | self.bank.get(addr + i)
        if raw == _UNIMPL[ptype] and ptype not in ("acc16", "acc32", "acc64"):
            return None
        if ptype in _SIGNED and raw >= 1 << (16 * size - 1):
            raw -= 1 << (16 * size)
        return raw

    def blank(self):
        """Every point to "not implemented", except each model's ID and L (the chain's skeleton)."""
        for model, (_, points) in self._table.items():
            for name in points:
                if name not in ("ID", "L"):
                    self.put(model, name, None)

    def writable(self, model, *names):
        """Open the registers of ``names`` to Modbus writes (all else stays read-only).

        Adjacent points become one window, so a client may set them in one FC 16 request
        (e.g. 124 ``OutWRte`` and ``InWRte`` together) as SunSpec clients do.
        """
        spans = []
        for n in names:
            start, _, size = self._spec(model, n)
            spans.append((start, start + size))
        spans.sort()
        start, end = spans[0]
        for s, e in spans[1:]:
            if s > end:
                self.bank.allow_write(start, end - start)
                start = s
            end = max(end, e)
        self.bank.allow_write(start, end - start)

    def touched(self, model, names, addr, count):
        """The subset of ``names`` whose registers overlap a write of ``count`` at ``addr``."""
        hit = []
        for name in names:
            start, _, size = self._spec(model, name)
            if start < addr + count and addr < start + size:
                hit.append(name)
        return hit


class Reversion:
    """A revert timer on the device clock: armed by each setpoint write, expires once.

    Sans-I/O: it is told the time (``now_ms``) and answers; role code polls it in ``tick``.
    """

    def __init__(self, clock):
        self._clock = clock
        self._deadline = None

    def arm(self, seconds):
        """(Re)start the timer; 0 seconds means the device default, never "forever"."""
        if seconds <= 0:
            seconds = DEFAULT_REVERT_S
        self._deadline = self._clock.ticks_ms() + seconds * 1000

    def disarm(self):
        self._deadline = None

    def remaining_s(self):
        """Whole seconds left (rounded up), 0 when not armed or expired."""
        if self._deadline is None:
            return 0
        left = self._clock.ticks_diff(self._deadline, self._clock.ticks_ms())
        return max(0, (left + 999) // 1000)

    def expired(self):
        """True exactly once, when an armed timer has run out (then it disarms itself)."""
        if self._deadline is None or self._clock.ticks_diff(self._deadline,
                                                            self._clock.ticks_ms()) > 0:
            return False
        self._deadline = None
        return True


def fill_common(points, *, role, serial, unit, version="0.1.0"):
    """Model 1: who the device is. ``serial`` is the device id the gateway keys its data on."""
    if not serial:
        raise RoleError("a device needs a non-empty serial number (its device id)")
    points.put(1, "Mn", "gridpeer")
    points.put(1, "Md", "gridpeer-" + role)
    points.put(1, "Vr", version)
    points.put(1, "SN", serial)
    points.put(1, "DA", unit)


def clamp(value, low, high):
    return low if value < low else high if value > high else value
