"""A small asyncio HTTP/1.1 server: h11 does the framing, ``DashboardApp`` answers.

h11 is a sans-I/O protocol core (bytes in, events out), so this file is only the loop between a
socket and the app plus the limits a gateway on a home network needs against a broken or hostile
client: header block size and header count (431), body size (413), an idle timeout per read, and a
cap on concurrent connections. Requests are answered one at a time per connection, with keep-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Self

import h11

from gateway.dashboard.app import DashboardApp, Request, Response
from gateway.dashboard.status import DashboardNode

log = logging.getLogger(__name__)

_READ_CHUNK = 16_384
_LINGER_S = 1.0


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may use; a dashboard request is a few hundred bytes."""

    max_header_bytes: int = 16_384
    max_headers: int = 64
    max_body_bytes: int = 16_384
    idle_timeout_s: float = 30.0
    max_connections: int = 32


class _Reject(Exception):
    """A request we answer with an error and then close the connection on."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class Dashboard:
    """``async with Dashboard(node=node, host="127.0.0.1", port=0) as d:`` — serves ``d.url``."""

    def __init__(
        self, *, node: DashboardNode, host: str = "127.0.0.1", port: int = 8080,
        limits: Limits = Limits(),
    ) -> None:
        self.app = DashboardApp(node=node)
        self._host = host
        self._port = port
        self._limits = limits
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(limits.max_connections)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("Dashboard is not running: use it as 'async with'")
        port = self._server.sockets[0].getsockname()[1]
        assert isinstance(port, int)
        return port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}/"

    async def __aenter__(self) -> Self:
        self.app.restore_preferences()
        self._server = await asyncio.start_server(self._accept, self._host, self._port)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if self._slots.locked():  # full: refuse at once rather than queue a slow client
                await self._send(h11.Connection(h11.SERVER), writer,
                                 Response.error(503, "too many connections"), close=True)
            else:
                async with self._slots:
                    await self._serve(reader, writer)
            await _linger(reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # the client went away or went quiet: nothing to answer
        except asyncio.CancelledError:
            pass  # the dashboard is stopping (``__aexit__`` cancels its connections)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.max_header_bytes)
        while True:
            try:
                request = await self._read_request(conn, reader)
            except _Reject as reject:
                await self._send(conn, writer, reject.response, close=True)
                return
            except h11.RemoteProtocolError as exc:
                response = Response.error(exc.error_status_hint, _protocol_message(exc))
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(conn, writer, response, close=True)
                return
            if request is None:
                return
            try:
                response = self.app.handle(request)
            except Exception:  # our bug: log it, answer 500, never send a traceback
                log.exception("dashboard: %s %s failed", request.method, request.target)
                response = Response.error(500, "internal error (see the gateway log)")
            await self._send(conn, writer, response, close=False)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _next_event(self, conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Event:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                assert not isinstance(event, type)  # PAUSED cannot occur: we never switch protocols
                return event
            async with asyncio.timeout(self._limits.idle_timeout_s):
                conn.receive_data(await reader.read(_READ_CHUNK))

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> Request | None:
        """The next whole request; None when the client closed the connection between requests."""
        limits = self._limits
        event = await self._next_event(conn, reader)
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request)
        if len(event.headers) > limits.max_headers:
            raise _Reject(Response.error(431, "too many headers", limit=limits.max_headers))
        # h11 bounds only a header block still arriving; one that came in a single read is
        # measured here, so the limit does not depend on how the client's bytes were split.
        size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
        if size > limits.max_header_bytes:
            raise _Reject(Response.error(431, "request header block too large",
                                         limit=limits.max_header_bytes))
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers}
        length = headers.get("content-length")
        if length is not None and int(length) > limits.max_body_bytes:
            raise _Reject(Response.error(413, "request body too large",
                                         limit=limits.max_body_bytes))
        body = bytearray()
        while True:
            part = await self._next_event(conn, reader)
            if isinstance(part, h11.EndOfMessage):
                break
            if isinstance(part, h11.ConnectionClosed):
                return None
            assert isinstance(part, h11.Data)
            body += part.data
            if len(body) > limits.max_body_bytes:
                raise _Reject(Response.error(413, "request body too large",
                                             limit=limits.max_body_bytes))
        return Request(method=event.method.decode("ascii"), target=event.target.decode("ascii"),
                       headers=headers, body=bytes(body))

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, response: Response, *,
        close: bool,
    ) -> None:
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
            *response.headers,
        ]
        if close:
            headers.append(("connection", "close"))
        data = conn.send(h11.Response(status_code=response.status, headers=headers,
                                      reason=HTTPStatus(response.status).phrase.encode()))
        data = (data or b"") + (conn.send(h11.Data(data=response.body)) or b"")
        writer.write(data + (conn.send(h11.EndOfMessage()) or b""))
        await writer.drain()


def _protocol_message(exc: h11.RemoteProtocolError) -> str:
    if exc.error_status_hint == 431:
        return "request header block too large"
    return f"malformed request: {exc}"


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then drop what the client still sends until it closes too (briefly).

    Closing a socket with unread bytes in it (the rest of a refused body, a request we answered
    503) makes the kernel send a reset, which can destroy the error response before the client
    reads it: the client would see "connection reset" instead of our 413 or 503.
    """
    if writer.can_write_eof() and not writer.is_closing():
        writer.write_eof()
    async with asyncio.timeout(_LINGER_S):
        while await reader.read(_READ_CHUNK):
            pass
