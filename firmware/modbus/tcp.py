"""Modbus TCP (MBAP) framing for one client connection: stream bytes in, reply bytes out.

TCP delivers a byte stream, not frames: an ADU may arrive split over several reads, or several
ADUs in one. The server keeps one ADU-sized buffer per connection (260 bytes: the 7-byte MBAP
header plus the largest PDU), so a board serving four clients holds four such buffers and no more.
An MBAP length outside 2..254 means the stream has lost its framing and cannot be resynchronised,
so the connection is marked ``closed`` for the adapter to drop.
"""

from firmware.compat import const
from firmware.modbus.pdu import handle_into

_HEADER = const(7)
_MAX_ADU = const(260)


class TcpServer:
    """One connection's worth of Modbus TCP. ``unit`` set: answer only that unit id."""

    def __init__(self, bank, unit=None):
        self.bank = bank
        self.unit = unit
        self.closed = False
        self._buf = bytearray(_MAX_ADU)
        self._n = 0
        self._out = bytearray(_MAX_ADU)

    def feed(self, data):
        """Consume ``data``; return the replies to every ADU it completed (b"" for none)."""
        replies = None
        src = memoryview(data)
        pos = 0
        total = len(data)
        buf = self._buf
        while not self.closed:
            take = min(_MAX_ADU - self._n, total - pos)
            if take:
                buf[self._n:self._n + take] = src[pos:pos + take]
                self._n += take
                pos += take
            if self._n < _HEADER:
                break
            length = (buf[4] << 8) | buf[5]
            if length < 2 or length > _MAX_ADU - 6:
                self.closed = True
                self._n = 0
                break
            need = 6 + length
            if self._n < need:
                if pos == total:
                    break
                continue
            reply = self._adu(need)
            if reply:
                replies = reply if replies is None else replies + reply
            rest = self._n - need
            if rest:
                buf[0:rest] = buf[need:self._n]
            self._n = rest
        return replies or b""

    def _adu(self, need):
        buf = self._buf
        if buf[2] or buf[3]:  # protocol id other than Modbus: not ours to answer
            return None
        unit = buf[6]
        if self.unit is not None and unit != self.unit:
            return None
        out = self._out
        m = handle_into(self.bank, memoryview(buf)[_HEADER:need], out, _HEADER)
        out[0] = buf[0]
        out[1] = buf[1]
        out[2] = 0
        out[3] = 0
        out[4] = (m + 1) >> 8
        out[5] = (m + 1) & 0xFF
        out[6] = unit
        return bytes(out[0:_HEADER + m])
