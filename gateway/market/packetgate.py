"""The gateway's bound on what a broker can make it buffer: no packet over ``MAX_PACKET_BYTES``.

paho reads a whole packet into memory before anyone sees it, so a peer's 100 MB retained message
would be buffered (and copied) whole before the envelope's size check, at every reconnect. The
field broker refuses such packets (``max_packet_size``, :mod:`gateway.installer.brokerconfig`),
but the embedded broker and a broker configured by hand do not, and the gateway must hold
whatever the broker does. So the bytes from the broker pass through a :class:`PacketGate` on
their way to paho:
every packet up to the limit passes unchanged; a PUBLISH over it reaches paho as the same PUBLISH
(topic, QoS, packet id, retain flag) with the payload :data:`CUT`, while its real payload is
thrown away as it arrives; so paho still acknowledges it and the broker's flow goes on, and the
link counts and drops it. Any other packet over the limit ends the connection (only a broken
broker sends one). MQTT 5's Maximum Packet Size would ask the broker not to send such packets,
but it binds only brokers that implement it, and the embedded amqtt speaks MQTT 3.1.1 only.

:class:`PacketGate` is the sans-I/O core (bytes in, bytes out); :class:`GatedSocket` wraps the
socket paho reads from, installed by :func:`gate_incoming` (the one place that reaches into
aiomqtt and paho, so that a change of either shows here).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Any

import aiomqtt

from protocols.market import topics
from protocols.messages import DEFAULT_MAX_ENVELOPE_BYTES

_FIXED_HEADER_MAX = 5  # packet type byte + at most 4 bytes of remaining length
MAX_PACKET_BYTES = _FIXED_HEADER_MAX + 2 + topics.MAX_TOPIC_BYTES + 2 + DEFAULT_MAX_ENVELOPE_BYTES
"""The largest MQTT 3.1.1 packet the protocol needs: a PUBLISH of the largest envelope on the
longest topic, with its packet id. The broker config and the gateway use the same figure."""

CUT = b"\x00gridpeer: payload cut at the packet limit"
"""What paho gets instead of an oversized payload; not JSON, so no peer message is ever this."""

_PUBLISH = 3
_CHUNK = 64 * 1024
_YIELD_BYTES = 4 * 1024 * 1024
"""Bytes of an oversized payload thrown away before the event loop gets a turn."""


class OversizedPacket(ConnectionError):
    """The broker sent a packet over the limit that is not a PUBLISH, or a malformed one: the
    connection ends (a ConnectionError, so paho treats it as a lost connection)."""


class PacketGate:
    """Feed it the broker's bytes in any pieces; it returns the bytes paho may see."""

    def __init__(self, *, limit: int = MAX_PACKET_BYTES) -> None:
        if limit < _FIXED_HEADER_MAX + 2 + len(CUT):
            raise ValueError(f"packet limit {limit} is too small for any PUBLISH")
        self._limit = limit
        self._head = bytearray()  # the fixed header being read
        self._var = bytearray()  # the variable header of a PUBLISH being cut
        self._var_needed = 0  # its length, once known (0: not yet)
        self._left = 0  # bytes of the current packet's remainder still to pass or drop
        self._state = "head"  # head | pass | var | drop
        self.cut = 0
        """PUBLISH packets whose payload was cut."""

    @property
    def cutting(self) -> bool:
        """Whether the gate is inside an oversized packet (reading it is worth big chunks)."""
        return self._state in ("var", "drop")

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        view = memoryview(data)
        while view:
            if self._state == "head":
                view = self._read_head(view, out)
            elif self._state == "pass":
                n = min(self._left, len(view))
                out += view[:n]
                view = view[n:]
                self._done(n)
            elif self._state == "var":
                view = self._read_var(view, out)
            else:
                n = min(self._left, len(view))
                view = view[n:]
                self._done(n)
        return bytes(out)

    def _done(self, n: int) -> None:
        self._left -= n
        if self._left == 0 and self._state in ("pass", "drop"):
            self._state = "head"

    def _read_head(self, view: memoryview, out: bytearray) -> memoryview:
        while view:
            self._head.append(view[0])
            view = view[1:]
            if len(self._head) == 1:
                continue
            if self._head[-1] & 0x80:
                if len(self._head) == _FIXED_HEADER_MAX:
                    raise OversizedPacket("malformed remaining length from the broker")
                continue
            remaining = 0
            for i, byte in enumerate(self._head[1:]):
                remaining += (byte & 0x7F) << (7 * i)
            self._start(remaining, out)
            return view
        return view

    def _start(self, remaining: int, out: bytearray) -> None:
        head, self._head = self._head, bytearray()
        self._left = remaining
        if len(head) + remaining <= self._limit:
            out += head
            self._state = "pass" if remaining else "head"
            return
        if head[0] >> 4 != _PUBLISH:
            raise OversizedPacket(f"a {len(head) + remaining}-byte packet of type {head[0] >> 4} "
                                  f"from the broker, over the {self._limit}-byte limit")
        self._head = head  # kept until the variable header is known
        self._var = bytearray()
        self._var_needed = 0
        self._state = "var"

    def _read_var(self, view: memoryview, out: bytearray) -> memoryview:
        qos = (self._head[0] >> 1) & 0x03
        while view and (self._var_needed == 0 or len(self._var) < self._var_needed):
            self._var.append(view[0])
            view = view[1:]
            self._left -= 1
            if self._var_needed == 0 and len(self._var) == 2:
                self._var_needed = 2 + int.from_bytes(self._var, "big") + (2 if qos else 0)
                if self._var_needed > len(self._var) + self._left:
                    raise OversizedPacket("malformed PUBLISH from the broker")
        if self._var_needed == 0 or len(self._var) < self._var_needed:
            return view
        out += _publish_header(self._head[0], len(self._var) + len(CUT))
        out += self._var
        out += CUT
        self._head, self._var = bytearray(), bytearray()
        self.cut += 1
        self._state = "drop" if self._left else "head"
        return view


def publish_size(topic: str, payload: bytes) -> int:
    """The bytes of a QoS 1 PUBLISH of ``payload`` on ``topic``, as it goes over the wire."""
    remaining = 2 + len(topic.encode()) + 2 + len(payload)
    return len(_publish_header(0x32, remaining)) + remaining


def _publish_header(first: int, remaining: int) -> bytes:
    length = bytearray()
    while True:
        byte, remaining = remaining & 0x7F, remaining >> 7
        length.append(byte | (0x80 if remaining else 0))
        if not remaining:
            return bytes([first]) + bytes(length)


class GatedSocket:
    """The socket (plain or TLS) paho reads from, with a :class:`PacketGate` on the way in.

    Everything but ``recv`` and ``pending`` goes to the wrapped socket. ``recv`` never reads more
    than paho asked for while packets pass, so bytes wait in the kernel as they did before;
    inside an oversized packet it reads and drops big chunks, and gives the event loop a turn
    every ``_YIELD_BYTES`` (reporting nothing pending, so aiomqtt's reader waits for the socket
    to be readable again instead of spinning).
    """

    def __init__(self, sock: socket.socket | ssl.SSLSocket, gate: PacketGate) -> None:
        self._sock = sock
        self._gate = gate
        self._out = bytearray()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        budget = _YIELD_BYTES
        while not self._out:
            want = _CHUNK if self._gate.cutting else max(1, min(bufsize, _CHUNK))
            data = self._sock.recv(want)
            if not data:
                return b""
            self._out += self._gate.feed(data)
            budget -= len(data)
            if budget <= 0 and not self._out:
                self._drop_decrypted()
                if not self._out:
                    raise BlockingIOError("dropping an oversized packet; more on the next read")
        chunk = bytes(self._out[:bufsize])
        del self._out[:bufsize]
        return chunk

    def _drop_decrypted(self) -> None:
        """Feed the gate what TLS has already decrypted, so that :meth:`pending` can say 0."""
        pending = _pending(self._sock)
        if pending:
            self._out += self._gate.feed(self._sock.recv(pending))

    def pending(self) -> int:
        return len(self._out) + _pending(self._sock)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _pending(sock: socket.socket | ssl.SSLSocket) -> int:
    return sock.pending() if isinstance(sock, ssl.SSLSocket) else 0


def gate_incoming(client: aiomqtt.Client, gate: PacketGate) -> None:
    """Put ``gate`` between ``client``'s socket and paho, for its next connection.

    aiomqtt hands its paho client's ``on_socket_open`` the new socket before the first byte is
    read; we wrap it there, make it the socket paho reads, and pass the wrapper on to aiomqtt's
    own handler (which registers its reader by the socket's file descriptor).
    """
    paho = client._client  # noqa: SLF001  aiomqtt's paho client, no public accessor
    opened: Callable[..., None] | None = paho.on_socket_open
    if opened is None or not hasattr(paho, "_sock"):
        raise RuntimeError("aiomqtt/paho changed shape: cannot gate the incoming packets")

    def on_socket_open(mqtt: Any, userdata: Any, sock: Any) -> None:
        gated = GatedSocket(sock, gate)
        mqtt._sock = gated  # noqa: SLF001  the socket paho reads from
        opened(mqtt, userdata, gated)

    paho.on_socket_open = on_socket_open
