"""The sans-I/O Modbus core against requests built by pymodbus, with golden bytes."""

import pytest
from pymodbus.pdu import DecodePDU

from firmware.modbus.bank import ModbusError, RegisterBank
from firmware.modbus.pdu import handle
from firmware.modbus.rtu import RtuServer, crc16, request_length
from firmware.modbus.tcp import TcpServer
from tests.firmware import frames
from tests.firmware.mp_driver import addresses, build

CLIENT = DecodePDU(False)  # pymodbus's client-side decoder reads our responses


def _bank() -> RegisterBank:
    bank = RegisterBank(40000, 100)
    bank.set(40000, 0x5375)
    bank.set(40001, 0x6E53)
    bank.set(40002, -2)
    bank.allow_write(40010, 4)
    return bank


def test_crc16_modbus_check_value() -> None:
    assert crc16(b"123456789") == 0x4B37  # the catalogue check value of CRC-16/MODBUS


def test_rtu_read_golden_bytes() -> None:
    server = RtuServer(1, _bank())
    request = frames.rtu(frames.read(40000, 3))
    assert request == bytes.fromhex("01039c400003 2a4f".replace(" ", ""))
    assert server.feed(request) == bytes.fromhex("010306 5375 6e53 fffe 8c54".replace(" ", ""))


def test_tcp_read_golden_bytes_and_pymodbus_decodes_it() -> None:
    server = TcpServer(_bank())
    reply = server.feed(frames.tcp(frames.read(40000, 2, tid=0x1234, fc=4)))
    assert reply == bytes.fromhex("123400000007010404 53756e53".replace(" ", ""))
    used, unit, tid, pdu = frames.TCP.decode(reply)
    assert (used, unit, tid) == (len(reply), 1, 0x1234)
    response = CLIENT.decode(pdu)
    assert response is not None and response.registers == [0x5375, 0x6E53]


def test_writes_apply_and_echo() -> None:
    bank = _bank()
    assert handle(bank, frames.pdu(frames.write1(40010, 0xBEEF))) == bytes.fromhex("069c4abeef")
    assert bank.get(40010) == 0xBEEF
    reply = handle(bank, frames.pdu(frames.write(40011, [1, 2, 3])))
    assert reply == bytes.fromhex("109c4b0003")
    assert bank.read(40010, 4) == bytes.fromhex("beef000100020003")


@pytest.mark.parametrize(("pdu", "expected"), [
    (bytes([0x05]) + bytes(4), "8501"),                      # write coil: not a register device
    (bytes([0x2B, 0x0E, 1, 0]), "ab01"),                     # device identification: unsupported
    (bytes.fromhex("039c40007e"), "8303"),                   # count 126 > 125
    (bytes.fromhex("039c400000"), "8303"),                   # count 0
    (frames.pdu(frames.read(40099, 2)), "8302"),             # runs past the bank
    (frames.pdu(frames.read(39999, 1, fc=4)), "8402"),       # before the bank
    (bytes.fromhex("039c40"), "8303"),                       # truncated request
    (frames.pdu(frames.write1(40000, 1)), "8602"),           # read-only register
    (frames.pdu(frames.write(40012, [1, 2, 3])), "9002"),    # window overrun
    (bytes.fromhex("109c4a000203000100"), "9003"),           # byte count 3 for 2 registers
    (bytes.fromhex("109c4a0002040001"), "9003"),             # fewer bytes than the byte count
])
def test_exception_responses(pdu: bytes, expected: str) -> None:
    bank = _bank()
    before = bank.read(40000, 100)
    assert handle(bank, pdu).hex() == expected
    assert bank.read(40000, 100) == before


def test_write_hook_refuses_with_03_and_fails_with_04_leaving_registers_unchanged() -> None:
    bank, _ = build()
    _, in_w, cha_gri = addresses()
    out_w = bank.get(in_w - 1)
    assert handle(bank, frames.pdu(frames.write1(in_w, 5000))) == bytes([6]) + in_w.to_bytes(
        2, "big") + (5000).to_bytes(2, "big")
    assert handle(bank, frames.pdu(frames.write(in_w - 1, [7, 20000]))).hex() == "9003"
    assert bank.get_signed(in_w) == 5000 and bank.get(in_w - 1) == out_w
    assert handle(bank, frames.pdu(frames.write1(cha_gri, 99))).hex() == "8604"
    assert bank.get(cha_gri) == 0xFFFF  # still "not implemented": the write was undone


def test_rtu_silence_rules_and_broadcast() -> None:
    bank = _bank()
    server = RtuServer(7, bank)
    good = frames.rtu(frames.read(40000, 1, unit=7))
    assert server.feed(good) is not None
    assert server.feed(good[:-1] + bytes([good[-1] ^ 1])) is None          # bad CRC
    assert server.feed(frames.rtu(frames.read(40000, 1, unit=8))) is None  # someone else's
    assert server.feed(b"\x07\x03") is None                                # too short
    assert server.feed(frames.rtu(frames.write1(40010, 42, unit=0))) is None
    assert bank.get(40010) == 42                                           # broadcast executed
    assert server.feed(frames.rtu(frames.write(40011, [5, 6], unit=0))) is None
    assert bank.read(40011, 2) == bytes.fromhex("00050006")
    assert server.feed(frames.rtu(frames.read(40000, 1, unit=0))) is None  # broadcast read
    reply = server.feed(frames.rtu_raw(bytes([0x05]) + bytes(4), unit=7))
    assert reply is not None and reply[1:3] == b"\x85\x01"


def test_rtu_request_length() -> None:
    assert request_length(b"\x01") == 0
    assert request_length(frames.rtu(frames.read(1, 1))) == 8
    write = frames.rtu(frames.write(40010, [1, 2, 3]))
    assert request_length(write[:6]) == 0
    assert request_length(write) == len(write)
    assert request_length(b"\x01\x2b") == -1


def test_tcp_partial_pipelined_and_filtered() -> None:
    server = TcpServer(_bank(), unit=1)
    a = frames.tcp(frames.read(40000, 1, tid=1))
    b = frames.tcp(frames.write1(40010, 9, tid=2))
    foreign = frames.tcp(frames.read(40000, 1, tid=3, unit=5))
    assert server.feed(a[:3]) == b""
    assert server.feed(a[3:9]) == b""
    stream = server.feed(a[9:] + foreign + b + a[:5])
    assert stream == bytes.fromhex("00010000000501030253750002000000060106 9c4a 0009".replace(
        " ", ""))
    assert server.feed(a[5:]) == bytes.fromhex("0001000000050103025375")


def test_tcp_other_protocol_ignored_and_bad_length_closes() -> None:
    server = TcpServer(_bank())
    other = bytearray(frames.tcp(frames.read(40000, 1)))
    other[3] = 1
    assert server.feed(bytes(other)) == b""
    assert not server.closed
    assert server.feed(bytes.fromhex("0001000001ff01")) == b""  # length 511: framing lost
    assert server.closed
    assert server.feed(frames.tcp(frames.read(40000, 1))) == b""


def test_many_adus_in_one_feed_beyond_buffer_size() -> None:
    server = TcpServer(_bank())
    requests = [frames.tcp(frames.read(40000, 100, tid=i)) for i in range(1, 40)]
    stream = server.feed(b"".join(requests))
    replies = []
    while stream:
        used, _, tid, pdu = frames.TCP.decode(stream)
        replies.append((tid, len(CLIENT.decode(pdu).registers)))
        stream = stream[used:]
    assert replies == [(i, 100) for i in range(1, 40)]


def test_bank_guards_its_own_misuse() -> None:
    with pytest.raises(ModbusError, match="within 0..65535"):
        RegisterBank(65000, 1000)
    bank = RegisterBank(0, 4)
    with pytest.raises(ModbusError, match="does not fit a register"):
        bank.set(0, 70000)
    with pytest.raises(ModbusError, match="outside bank"):
        bank.get(4)
    with pytest.raises(ModbusError, match="1..247"):
        RtuServer(0, bank)


def test_wide_values_and_strings() -> None:
    bank = RegisterBank(0, 16)
    bank.set32(0, -2)
    bank.set64(2, 2**64 - 1)
    bank.set_str(6, 4, "gridpe")
    assert bank.get32(0, signed=True) == -2 and bank.get32(0) == 0xFFFFFFFE
    assert bank.get64(2) == 2**64 - 1
    assert bank.read(6, 4) == b"gridpe\0\0"
    with pytest.raises(ModbusError, match="longer than"):
        bank.set_str(6, 1, "abc")
