"""Random and mutated frames: the core answers with a valid response, an exception response, or
silence, and never raises. Responses are parsed by pymodbus's client-side framers as the check."""

from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.pdu import DecodePDU, ExceptionResponse

from firmware.modbus.rtu import RtuServer
from firmware.modbus.tcp import TcpServer
from tests.firmware import frames
from tests.firmware.mp_driver import build

CLIENT = DecodePDU(False)


def _valid_requests() -> st.SearchStrategy[bytes]:
    addr = st.integers(39990, 40200)
    return st.one_of(
        st.builds(lambda a, c, fc: frames.pdu(frames.read(a, c, fc=fc)), addr,
                  st.integers(1, 125), st.sampled_from((3, 4))),
        st.builds(lambda a, v: frames.pdu(frames.write1(a, v)), addr, st.integers(0, 0xFFFF)),
        st.builds(lambda a, vs: frames.pdu(frames.write(a, vs)), addr,
                  st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=20)),
    )


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(("flip", "cut", "insert")))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif op == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        else:
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


def _check_pdu(request_fc: int, pdu: bytes) -> None:
    """An exception response (fc | 0x80, code 1..4) or a normal response pymodbus can parse.

    pymodbus only parses exceptions for function codes it knows, so exceptions to unknown
    functions (01: illegal function) are checked by their two bytes.
    """
    if pdu[0] & 0x80:
        assert len(pdu) == 2 and pdu[0] == (request_fc | 0x80) and pdu[1] in (1, 2, 3, 4)
        response = CLIENT.decode(pdu)
        assert response is None or isinstance(response, ExceptionResponse)
        return
    response = CLIENT.decode(pdu)
    assert response is not None and response.function_code == request_fc, pdu.hex()


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=300), mutated(_valid_requests())), st.sampled_from((1, 0, 9)))
def test_rtu_never_raises_and_replies_are_valid(pdu: bytes, unit: int) -> None:
    bank, _ = build()
    server = RtuServer(1, bank)
    for frame in (frames.rtu_raw(pdu, unit=unit), pdu):  # framed by pymodbus, and raw garbage
        reply = server.feed(frame)
        if reply is None:
            continue
        assert frame[0] == 1 and reply[0] == 1
        used, unit_id, _, rpdu = frames.RTU.decode(reply)
        assert used == len(reply) and unit_id == 1, "reply must carry a valid CRC"
        _check_pdu(frame[1], rpdu)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), mutated(_valid_requests())), max_size=6),
       st.data())
def test_tcp_stream_never_raises_and_replies_are_valid(
    pdus: list[bytes], data: st.DataObject
) -> None:
    bank, _ = build()
    server = TcpServer(bank)
    stream = b"".join(frames.tcp_raw(p, tid=i) if p else b"" for i, p in enumerate(pdus))
    if data.draw(st.booleans()):
        stream = data.draw(mutated(st.just(stream)))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    out = b""
    last = 0
    for cut in [*cuts, len(stream)]:
        out += server.feed(stream[last:cut])
        last = cut
    while out:
        used, _, _, rpdu = frames.TCP.decode(out)
        assert used > 0, out.hex()
        _check_pdu(rpdu[0] & 0x7F, rpdu)
        out = out[used:]
