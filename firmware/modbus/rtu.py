"""Modbus RTU framing: one complete frame in, the reply frame (or silence) out.

On RS-485 several devices share the line, so the standard makes a server silent unless it is
certain the frame was for it: a bad CRC, a foreign address, or a broadcast (address 0) gets no
reply. Broadcast writes are still executed: that is how a gateway sets all devices at once.
Splitting the byte stream into frames is the transport's job (inter-frame gap of 3.5 characters,
or ``request_length`` for a length-aware reader).
"""

from firmware.compat import const
from firmware.modbus.bank import ModbusError
from firmware.modbus.pdu import handle_into

_BROADCAST = const(0)
_MIN_FRAME = const(4)  # address, function, CRC
_MAX_FRAME = const(256)


def crc16(data):
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF) of ``data``."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0xA001
            else:
                crc >>= 1
    return crc


def request_length(buf):
    """Total length of the request frame at the start of ``buf``: 0 = need more bytes, -1 = the
    function code does not say (fall back to the inter-frame gap)."""
    if len(buf) < 2:
        return 0
    fc = buf[1]
    if fc in (3, 4, 6):
        return 8
    if fc == 16:
        return 9 + buf[6] if len(buf) >= 7 else 0
    return -1


class RtuServer:
    """The RTU face of one device at bus address ``unit`` (1..247)."""

    def __init__(self, unit, bank):
        if not 1 <= unit <= 247:
            raise ModbusError(f"RTU unit address must be 1..247, got {unit}")
        self.unit = unit
        self.bank = bank
        self._out = bytearray(_MAX_FRAME)

    def feed(self, frame):
        """Reply to one complete RTU ``frame``, or None for silence."""
        n = len(frame)
        if n < _MIN_FRAME or n > _MAX_FRAME:
            return None
        address = frame[0]
        if address != self.unit and address != _BROADCAST:
            return None
        mv = memoryview(frame)
        if crc16(mv[0:n - 2]) != frame[n - 2] | (frame[n - 1] << 8):
            return None
        if address == _BROADCAST:
            if frame[1] in (6, 16):
                handle_into(self.bank, mv[1:n - 2], self._out, 1)
            return None
        out = self._out
        m = handle_into(self.bank, mv[1:n - 2], out, 1)
        out[0] = address
        crc = crc16(memoryview(out)[0:m + 1])
        out[m + 1] = crc & 0xFF
        out[m + 2] = crc >> 8
        return bytes(out[0:m + 3])
