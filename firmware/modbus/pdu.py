"""Modbus PDU handling: function codes 03, 04, 06 and 16 against a RegisterBank.

Peer mistakes never raise: each becomes the exception response the Modbus spec names, checked in
the spec's order (function, then quantity/byte count, then address, then execution) so a client
sees the same code any compliant device would give. Input registers (04) are served from the same
bank as holding registers (03), as SunSpec devices do.
"""

import struct

from firmware.compat import const

_READ_HOLDING = const(3)
_READ_INPUT = const(4)
_WRITE_SINGLE = const(6)
_WRITE_MULTIPLE = const(16)
_ILLEGAL_FUNCTION = const(1)
_ILLEGAL_VALUE = const(3)
_MAX_READ = const(125)
_MAX_WRITE = const(123)

#: Largest PDU Modbus allows (256-byte RTU ADU minus address and CRC).
MAX_PDU = const(253)


def _exception(out, pos, fc, code):
    out[pos] = (fc | 0x80) & 0xFF
    out[pos + 1] = code
    return 2


def handle_into(bank, pdu, out, pos):
    """Answer request ``pdu`` into ``out[pos:]``; returns the response length (0: no request).

    ``out`` must have ``MAX_PDU`` bytes free from ``pos``; framers keep one such buffer so a
    request costs no allocation here.
    """
    n = len(pdu)
    if n == 0:
        return 0
    fc = pdu[0]
    if fc == _READ_HOLDING or fc == _READ_INPUT:
        if n != 5:
            return _exception(out, pos, fc, _ILLEGAL_VALUE)
        addr, count = struct.unpack_from(">HH", pdu, 1)
        if not 1 <= count <= _MAX_READ:
            return _exception(out, pos, fc, _ILLEGAL_VALUE)
        if not bank.contains(addr, count):
            return _exception(out, pos, fc, 2)
        out[pos] = fc
        out[pos + 1] = 2 * count
        bank.read_into(addr, count, out, pos + 2)
        return 2 + 2 * count
    if fc == _WRITE_SINGLE:
        if n != 5:
            return _exception(out, pos, fc, _ILLEGAL_VALUE)
        addr = struct.unpack_from(">H", pdu, 1)[0]
        code = bank.write(addr, pdu[3:5])
        if code:
            return _exception(out, pos, fc, code)
        out[pos:pos + 5] = pdu
        return 5
    if fc == _WRITE_MULTIPLE:
        if n < 6:
            return _exception(out, pos, fc, _ILLEGAL_VALUE)
        addr, count = struct.unpack_from(">HH", pdu, 1)
        nbytes = pdu[5]
        if not 1 <= count <= _MAX_WRITE or nbytes != 2 * count or n != 6 + nbytes:
            return _exception(out, pos, fc, _ILLEGAL_VALUE)
        code = bank.write(addr, pdu[6:n])
        if code:
            return _exception(out, pos, fc, code)
        out[pos:pos + 5] = pdu[0:5]
        return 5
    return _exception(out, pos, fc, _ILLEGAL_FUNCTION)


_scratch = bytearray(MAX_PDU)


def handle(bank, pdu):
    """Answer request ``pdu`` with a response PDU (b"" for an empty request)."""
    n = handle_into(bank, pdu, _scratch, 0)
    return bytes(_scratch[0:n])
