"""Request frames built by pymodbus (an independent Modbus implementation), for the core's tests.

Valid requests come from pymodbus's PDU classes and framers; malformed ones (bad counts, byte
counts, unknown functions) are raw PDUs framed by pymodbus's own RTU/MBAP encoders, so the CRC
and headers are never computed by the code under test.
"""

import random

from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

RTU = FramerRTU(DecodePDU(False))
TCP = FramerSocket(DecodePDU(False))


def pdu(request: ModbusPDU) -> bytes:
    """The request's PDU bytes (function code + data), as pymodbus encodes them."""
    return bytes([request.function_code]) + request.encode()


def rtu(request: ModbusPDU) -> bytes:
    return RTU.buildFrame(request)


def tcp(request: ModbusPDU) -> bytes:
    return TCP.buildFrame(request)


def rtu_raw(payload: bytes, unit: int = 1) -> bytes:
    return RTU.encode(payload, unit, 0)


def tcp_raw(payload: bytes, unit: int = 1, tid: int = 1) -> bytes:
    return TCP.encode(payload, unit, tid)


def read(address: int, count: int, *, unit: int = 1, tid: int = 0, fc: int = 3) -> ModbusPDU:
    cls = ReadHoldingRegistersRequest if fc == 3 else ReadInputRegistersRequest
    return cls(dev_id=unit, transaction_id=tid, address=address, count=count)


def write1(address: int, value: int, *, unit: int = 1, tid: int = 0) -> ModbusPDU:
    return WriteSingleRegisterRequest(dev_id=unit, transaction_id=tid, address=address,
                                      registers=[value])


def write(address: int, values: list[int], *, unit: int = 1, tid: int = 0) -> ModbusPDU:
    return WriteMultipleRegistersRequest(dev_id=unit, transaction_id=tid, address=address,
                                         registers=values)


def workload(seed: int, n: int, base: int, size: int, writable: tuple[int, int]) -> list[bytes]:
    """``n`` records ``kind + len(2) + frame`` (kind 0 = RTU, 1/2 = two TCP connections) mixing
    reads, writes, refused values, exceptions, broadcasts, foreign units, bad CRCs, and TCP ADUs
    split across feeds, for the MicroPython-vs-CPython comparison."""
    rng = random.Random(seed)
    w_start, w_count = writable
    records = []
    for i in range(n):
        tid = i & 0xFFFF
        choice = rng.randrange(10)
        if choice < 3:
            count = rng.randrange(1, 126)
            addr = rng.randrange(base - 10, base + size)
            req = read(addr, count, tid=tid, fc=rng.choice((3, 4)))
        elif choice < 5:
            req = write1(w_start + rng.randrange(w_count), rng.randrange(0x10000), tid=tid)
        elif choice < 7:
            start = rng.randrange(w_start - 2, w_start + w_count)
            values = [rng.randrange(0x10000) for _ in range(rng.randrange(1, 6))]
            req = write(start, values, tid=tid)
        else:
            req = None
        if req is None:
            payload = bytes([rng.choice((1, 2, 5, 7, 0x2B, 0x83))]) + rng.randbytes(4)
            frame_rtu = rtu_raw(payload, unit=rng.choice((1, 2, 0)))
            frame_tcp = tcp_raw(payload, tid=tid)
        else:
            req.dev_id = rng.choice((1, 1, 1, 0, 9))
            frame_rtu, frame_tcp = rtu(req), tcp(req)
        if rng.randrange(20) == 0:
            frame_rtu = frame_rtu[:-1] + bytes([frame_rtu[-1] ^ 0x55])
        if rng.randrange(2):
            records.append(_record(0, frame_rtu))
        else:
            conn = 1 + rng.randrange(2)
            cut = rng.randrange(1, len(frame_tcp) + 1)
            records.append(_record(conn, frame_tcp[:cut]))
            if cut < len(frame_tcp):
                records.append(_record(conn, frame_tcp[cut:]))
    return records


def _record(kind: int, data: bytes) -> bytes:
    return bytes([kind]) + len(data).to_bytes(2, "big") + data
