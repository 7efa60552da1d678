"""The device's holding registers: one preallocated bytearray, big-endian, as on the wire.

Keeping the registers in wire order means a Modbus read is one slice copy and a multi-register
value (int32, acc64, a string) is one ``struct.pack_into``: no per-register objects on a board with
a few tens of KiB of heap. Writes from the bus are checked against declared writable windows and
passed to the role code's callback, which may refuse a value (exception 03) before anything is
kept, so a client never sees a half-applied setpoint.
"""

import struct

from firmware.compat import const

_OK = const(0)
_ILLEGAL_ADDRESS = const(2)
_DEVICE_FAILURE = const(4)
_MAX_WRITE = const(123)  # registers in one FC 16 request


class ModbusError(Exception):
    """Our own misuse of the core (bad bank geometry, a value that does not fit a register).

    Faults of the peer are never raised: they become Modbus exception responses or silence.
    """


class RegisterBank:
    """``size`` 16-bit registers starting at Modbus address ``base``."""

    def __init__(self, base, size):
        if not (0 <= base <= 0xFFFF and 0 < size and base + size <= 0x10000):
            raise ModbusError(f"bank must lie within 0..65535: base {base} size {size}")
        self.base = base
        self.size = size
        self.regs = bytearray(2 * size)
        self._windows = []
        self._callback = None
        self._undo = bytearray(2 * _MAX_WRITE)

    def contains(self, addr, count):
        """True when ``count`` registers from ``addr`` are all inside the bank."""
        return count > 0 and self.base <= addr and addr + count <= self.base + self.size

    def _offset(self, addr, count):
        if not self.contains(addr, count):
            raise ModbusError(f"registers {addr}..{addr + count - 1} outside bank")
        return 2 * (addr - self.base)

    def read(self, addr, count):
        """The ``count`` registers from ``addr`` as wire bytes."""
        i = self._offset(addr, count)
        return bytes(self.regs[i:i + 2 * count])

    def read_into(self, addr, count, buf, pos):
        """Copy registers into ``buf`` at ``pos`` without allocating (used by the PDU handler)."""
        i = self._offset(addr, count)
        buf[pos:pos + 2 * count] = memoryview(self.regs)[i:i + 2 * count]

    def allow_write(self, addr, count):
        """Declare ``count`` registers from ``addr`` writable by Modbus clients."""
        self._offset(addr, count)
        self._windows.append((addr, addr + count))

    def on_write(self, callback):
        """Call ``callback(addr, count)`` after each bus write, with the new values in place.

        It returns None or 0 to accept, or a Modbus exception code (3 for a bad value) to refuse;
        a refused or raising callback leaves the registers as they were.
        """
        self._callback = callback

    def writable(self, addr, count):
        end = addr + count
        for start, stop in self._windows:
            if start <= addr and end <= stop:
                return True
        return False

    def write(self, addr, data):
        """Apply a bus write of wire bytes ``data``; returns 0 or a Modbus exception code."""
        count = len(data) // 2
        if count > _MAX_WRITE or not self.contains(addr, count) or not self.writable(addr, count):
            return _ILLEGAL_ADDRESS
        i = 2 * (addr - self.base)
        n = 2 * count
        undo = self._undo
        undo[0:n] = memoryview(self.regs)[i:i + n]
        self.regs[i:i + n] = data
        if self._callback is None:
            return _OK
        try:
            code = self._callback(addr, count)
        except Exception:  # the role code failed: report it, keep serving
            code = _DEVICE_FAILURE
        if code:
            self.regs[i:i + n] = memoryview(undo)[0:n]
            return code
        return _OK

    def set(self, addr, value):
        """Store a 16-bit value; negative values are stored two's complement (int16, sunssf)."""
        if not -0x8000 <= value <= 0xFFFF:
            raise ModbusError(f"{value} does not fit a register")
        struct.pack_into(">H", self.regs, self._offset(addr, 1), value & 0xFFFF)

    def get(self, addr):
        """The register at ``addr`` as unsigned 16-bit."""
        return struct.unpack_from(">H", self.regs, self._offset(addr, 1))[0]

    def get_signed(self, addr):
        """The register at ``addr`` as int16 (for setpoints such as InWRte)."""
        return struct.unpack_from(">h", self.regs, self._offset(addr, 1))[0]

    def set32(self, addr, value):
        """Store int32/uint32/acc32 high word first."""
        if not -0x80000000 <= value <= 0xFFFFFFFF:
            raise ModbusError(f"{value} does not fit 32 bits")
        struct.pack_into(">I", self.regs, self._offset(addr, 2), value & 0xFFFFFFFF)

    def get32(self, addr, signed=False):
        return struct.unpack_from(">i" if signed else ">I", self.regs, self._offset(addr, 2))[0]

    def set64(self, addr, value):
        """Store int64/uint64/acc64 high word first."""
        if not -0x8000000000000000 <= value <= 0xFFFFFFFFFFFFFFFF:
            raise ModbusError(f"{value} does not fit 64 bits")
        struct.pack_into(">Q", self.regs, self._offset(addr, 4), value & 0xFFFFFFFFFFFFFFFF)

    def get64(self, addr):
        return struct.unpack_from(">Q", self.regs, self._offset(addr, 4))[0]

    def set_str(self, addr, count, text):
        """Store ``text`` NUL-padded into ``count`` registers (SunSpec string)."""
        data = text.encode()
        if len(data) > 2 * count:
            raise ModbusError(f"{text} longer than {count} registers")
        i = self._offset(addr, count)
        self.regs[i:i + 2 * count] = bytes(2 * count)
        self.regs[i:i + len(data)] = data

    def fill(self, addr, count, value):
        """Set ``count`` registers to one 16-bit ``value`` (e.g. 0xFFFF: not implemented)."""
        for a in range(addr, addr + count):
            self.set(a, value)
