"""The packet gate between the broker's bytes and paho: packets up to the limit pass unchanged
however the stream is split, an oversized PUBLISH reaches paho cut (same topic, QoS, packet id
and flags), anything else oversized or malformed ends the connection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.market.packetgate import (
    CUT,
    MAX_PACKET_BYTES,
    OversizedPacket,
    PacketGate,
    publish_size,
)
from protocols.market import topics
from protocols.messages import DEFAULT_MAX_ENVELOPE_BYTES

LIMIT = 300


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def publish(topic: str, payload: bytes, *, qos: int = 1, mid: int = 7, retain: bool = True,
            dup: bool = False) -> bytes:
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    name = topic.encode()
    var = len(name).to_bytes(2, "big") + name + (mid.to_bytes(2, "big") if qos else b"")
    return packet(first, var + payload)


def fed(gate: PacketGate, stream: bytes, cuts: list[int]) -> bytes:
    """The gate's output for ``stream`` fed in pieces split at ``cuts``."""
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    return b"".join(gate.feed(stream[a:b]) for a, b in zip(points, points[1:], strict=False))


small_packets = st.one_of(
    st.builds(lambda t, p, q, m, r: publish(t, p, qos=q, mid=m, retain=r),
              st.from_regex(r"gridpeer/c/bids/[0-9]{1,2}/[a-z]{1,8}", fullmatch=True),
              st.binary(max_size=200), st.integers(0, 2), st.integers(1, 65535), st.booleans()),
    st.just(packet(0x40, b"\x00\x07")),  # PUBACK
    st.just(packet(0xD0, b"")),  # PINGRESP
    st.just(packet(0x90, b"\x00\x01\x01")),  # SUBACK
)


@given(packets=st.lists(small_packets, max_size=8), cuts=st.lists(st.integers(0, 4000)))
def test_packets_up_to_the_limit_pass_unchanged_however_split(
    packets: list[bytes], cuts: list[int],
) -> None:
    stream = b"".join(packets)
    assert fed(PacketGate(limit=LIMIT), stream, cuts) == stream


@given(before=st.lists(small_packets, max_size=3), after=st.lists(small_packets, max_size=3),
       size=st.integers(LIMIT, 5_000), qos=st.integers(0, 2), retain=st.booleans(),
       dup=st.booleans(), cuts=st.lists(st.integers(0, 8000)))
def test_an_oversized_publish_reaches_paho_with_its_payload_cut(
    before: list[bytes], after: list[bytes], size: int, qos: int, retain: bool, dup: bool,
    cuts: list[int],
) -> None:
    topic = "gridpeer/c/bids/3/mallory"
    big = publish(topic, b"x" * size, qos=qos, mid=4242, retain=retain, dup=dup)
    stream = b"".join([*before, big, *after])
    expected = b"".join(
        [*before, publish(topic, CUT, qos=qos, mid=4242, retain=retain, dup=dup), *after])
    assert fed(PacketGate(limit=LIMIT), stream, cuts) == expected


def test_a_100_mb_publish_is_cut_without_being_held() -> None:
    gate = PacketGate()
    name = b"gridpeer/c/bids/3/mallory"
    size = 100 * 1024 * 1024
    var = len(name).to_bytes(2, "big") + name + (9).to_bytes(2, "big")
    header = bytes([0x33]) + varint(len(var) + size) + var
    out = bytearray(gate.feed(header))
    chunk = b"\x00" * (1 << 20)
    for _ in range(100):
        out += gate.feed(chunk)  # nothing of it is kept: each piece is dropped as it comes
    out += gate.feed(packet(0xD0, b""))
    assert bytes(out) == publish("gridpeer/c/bids/3/mallory", CUT, mid=9) + packet(0xD0, b"")


def test_the_limit_is_the_largest_envelope_on_the_longest_topic() -> None:
    topic = "t" * topics.MAX_TOPIC_BYTES
    largest = publish(topic, b"e" * DEFAULT_MAX_ENVELOPE_BYTES)
    assert len(largest) == publish_size(topic, b"e" * DEFAULT_MAX_ENVELOPE_BYTES)
    assert len(largest) <= MAX_PACKET_BYTES
    assert PacketGate().feed(largest) == largest


@given(topic=st.text(max_size=200), size=st.integers(0, 3_000_000))
def test_publish_size_is_the_size_on_the_wire(topic: str, size: int) -> None:
    assert publish_size(topic, b"p" * size) == len(publish(topic, b"p" * size))


@pytest.mark.parametrize("stream", [
    packet(0x90, b"\x00\x01" + b"\x01" * LIMIT),  # an oversized SUBACK: only a broken broker
    bytes([0x30, 0x80, 0x80, 0x80, 0x80, 0x01]),  # remaining length over 4 bytes
    bytes([0x32]) + varint(LIMIT + 10) + b"\xff\xff",  # a topic longer than the packet
])
def test_oversized_non_publish_or_malformed_packets_end_the_connection(stream: bytes) -> None:
    with pytest.raises(OversizedPacket):
        PacketGate(limit=LIMIT).feed(stream)
