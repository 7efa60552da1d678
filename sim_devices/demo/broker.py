"""Embedded MQTT broker (amqtt) for the demo and the tests.

The peer protocol needs nothing from a broker but relaying, retained messages and last wills, so the
demo and the test suite run amqtt inside their own event loop instead of asking for a Mosquitto
binary. A field community points its gateways at a real broker; nothing else changes.

Binding to port 0 lets the OS pick a free port atomically (no probe-then-bind race between parallel
test runs); the chosen port is read back from the listening socket.

amqtt has no packet size limit, so the embedded broker adds the field broker's
(``max_packet_size``): a client that sends a packet larger than the protocol's largest message is
disconnected before its payload is read. Without it, anyone on the demo's loopback could make
the broker hold, and every gateway receive, a message of hundreds of megabytes.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any, Self

# amqtt ships no type information (no py.typed); its use is confined to this file.
from amqtt.adapters import (  # type: ignore[import-untyped]
    StreamReaderAdapter,
    StreamWriterAdapter,
)
from amqtt.broker import Broker  # type: ignore[import-untyped]

from gateway.market.packetgate import MAX_PACKET_BYTES

_LOGGERS = ("amqtt", "transitions")
_SHUTDOWN_S = 5.0
_DRAIN_TRIES = 100


class BrokerStartError(RuntimeError):
    """The embedded broker could not listen (address in use, bad host)."""


class BrokerStopError(RuntimeError):
    """The embedded broker did not shut down in time (an amqtt hang, not a peer's fault)."""


class OversizedPacketError(Exception):
    """A client sent a packet over the embedded broker's limit; its connection is closed."""


class _BoundedReader(StreamReaderAdapter):  # type: ignore[misc]
    """amqtt reads each packet's variable part with one ``read(n)`` after the fixed header, so
    refusing an ``n`` over the limit refuses the packet before a byte of it is buffered."""

    def __init__(self, reader: asyncio.StreamReader, limit: int) -> None:
        super().__init__(reader)
        self._limit = limit

    async def read(self, n: int = -1) -> bytes:
        if n > self._limit:
            raise OversizedPacketError(f"a {n}-byte read, over the {self._limit}-byte limit")
        data: bytes = await super().read(n)
        return data


class _BoundedBroker(Broker):  # type: ignore[misc]
    def __init__(self, config: dict[str, Any], *, max_packet_bytes: int) -> None:
        super().__init__(config, loop=asyncio.get_running_loop())
        self._max_packet_bytes = max_packet_bytes

    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               listener_name: str) -> None:
        """amqtt's own, with a bounded reader. An oversized packet inside a session ends it in
        amqtt's reader loop; one before (a CONNECT) ends here."""
        try:
            await self._client_connected(listener_name, _BoundedReader(reader,
                                                                       self._max_packet_bytes),
                                         StreamWriterAdapter(writer))
        except OversizedPacketError as exc:
            logging.getLogger(__name__).warning("embedded broker: %s; connection closed", exc)
            writer.transport.abort()


class EmbeddedBroker:
    """``async with EmbeddedBroker() as broker:`` — an amqtt broker living as long as the block.

    ``broker.url`` is ``mqtt://host:port`` for ``PeerLink(broker_url=...)``.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, quiet: bool = True,
                 max_packet_bytes: int = MAX_PACKET_BYTES) -> None:
        self._host = host
        self._max_packet_bytes = max_packet_bytes
        self._requested_port = port
        self._quiet = quiet
        self._broker: Broker | None = None
        self._port: int | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("EmbeddedBroker is not running: use it as 'async with'")
        return self._port

    @property
    def url(self) -> str:
        return f"mqtt://{self._host}:{self.port}"

    def _config(self) -> dict[str, Any]:
        # Only anonymous auth: the default plugin set adds $SYS publishing and packet logging,
        # which are noise for a relay that lives for one test.
        return {
            "listeners": {
                "default": {
                    "type": "tcp",
                    "bind": f"{self._host}:{self._requested_port}",
                    "max_connections": 0,
                }
            },
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }

    async def __aenter__(self) -> Self:
        if self._quiet:
            for name in _LOGGERS:
                logging.getLogger(name).setLevel(logging.WARNING)
        broker = _BoundedBroker(self._config(), max_packet_bytes=self._max_packet_bytes)
        try:
            await broker.start()
        except Exception as exc:  # amqtt wraps every listener failure in BrokerError
            raise BrokerStartError(
                f"cannot start embedded broker on {self._host}:{self._requested_port}: {exc}"
            ) from exc
        self._broker = broker
        self._port = _bound_port(broker)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        broker, self._broker, self._port = self._broker, None, None
        if broker is None:
            return
        await _drop_clients(broker)
        try:
            async with asyncio.timeout(_SHUTDOWN_S):
                await broker.shutdown()
        except TimeoutError:
            raise BrokerStopError(f"embedded broker did not stop within {_SHUTDOWN_S} s") from None


async def _drop_clients(broker: Broker) -> None:
    """Abort every client connection, as a crashed broker would, before asking amqtt to stop.

    amqtt 0.12's ``shutdown()`` waits forever for the reader task of a client that is still
    connected (it cancels the reader, then awaits an event only the reader's normal exit sets).
    With the sockets gone first, each reader ends on its own and shutdown completes. Clients see a
    lost connection (their last will fires), which is what stopping a broker means for them.
    """
    for _session, handler in list(broker.sessions.values()):
        writer = handler.writer
        if isinstance(writer, StreamWriterAdapter):
            writer._writer.transport.abort()
    for _ in range(_DRAIN_TRIES):
        if not any(s.transitions.is_connected() for s, _ in broker.sessions.values()):
            break
        await asyncio.sleep(0.01)


def _bound_port(broker: Broker) -> int:
    """The port the default TCP listener actually bound (differs from the config when it was 0).

    amqtt keeps its listening servers in ``_servers`` with no public accessor; this is the one place
    that reaches in, and it fails loudly if amqtt changes shape.
    """
    server = broker._servers["default"].instance
    sockets = getattr(server, "sockets", None)
    if not sockets:
        raise BrokerStartError("embedded broker started but has no listening socket")
    port = sockets[0].getsockname()[1]
    if not isinstance(port, int):
        raise BrokerStartError(f"unexpected socket name from amqtt listener: {port!r}")
    return port
