"""A small asyncio HTTP/1.1 server: h11 does the framing, ``DashboardApp`` answers.

h11 is a sans-I/O protocol core (bytes in, events out), so this file is only the loop between a
socket and the app plus the limits a gateway on a home network needs against a broken or hostile
client: header block size and header count (431), body size (413), a cap on concurrent connections
(503) and on those of one client address (429), a deadline for each whole request (408), and a
request budget per client address. Requests are answered one at a time per connection, with
keep-alive.

The deadline is what ends a slow sender: a limit per read lets a client keep a connection forever
by sending one byte at a time just inside it, and enough of them hold every connection slot. A
request must arrive whole (headers and body) within ``request_timeout_s`` of the server starting
to wait for it, and its answer must be taken within the same time; a keep-alive connection that
stays idle as long is closed. The per-client cap keeps one host on the LAN from taking every slot
while the deadline frees them.

The budget is what keeps a fast sender from the event loop the market's ticks share: a client that
asks faster than a page ever does waits for its turn (it is not refused, so a page never notices).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self

import h11

from gateway.dashboard.app import DashboardApp, Request, Response
from gateway.dashboard.ratelimit import ClientBudget
from gateway.dashboard.status import DashboardNode

log = logging.getLogger(__name__)

_READ_CHUNK = 16_384
_LINGER_S = 1.0


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one request, one client and all of them may use (a dashboard request is a few
    hundred bytes); ``request_timeout_s`` is the whole-request deadline."""

    max_header_bytes: int = 16_384
    max_headers: int = 64
    max_body_bytes: int = 16_384
    request_timeout_s: float = 10.0
    max_connections: int = 32
    max_connections_per_client: int = 8
    requests_per_s_per_client: float = 10.0
    """Beyond it (after a burst of twice as many) a client's requests wait for their turn."""


class _Reject(Exception):
    """A request we answer with an error and then close the connection on."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class Dashboard:
    """``async with Dashboard(node=node, host="127.0.0.1", port=0) as d:`` — serves ``d.url``."""

    def __init__(
        self, *, node: DashboardNode, host: str = "127.0.0.1", port: int = 8080,
        limits: HttpLimits = HttpLimits(),
    ) -> None:
        self.app = DashboardApp(node=node)
        self._host = host
        self._port = port
        self._limits = limits
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._served: Counter[str] = Counter()  # connections being served, by client address
        self._requests = ClientBudget(burst=max(1, round(2 * limits.requests_per_s_per_client)),
                                      refill_s=1 / limits.requests_per_s_per_client)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("Dashboard is not running: use it as 'async with'")
        port = self._server.sockets[0].getsockname()[1]
        assert isinstance(port, int)
        return port

    @property
    def served(self) -> int:
        """Connections being served now: the ones the caps count (refused ones are not)."""
        return self._served.total()

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}/"

    async def __aenter__(self) -> Self:
        await self.app.open()
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
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self._connections.add(task)
        limits = self._limits
        try:
            # Over a cap: refused at once rather than queued behind slow clients.
            if self._served.total() >= limits.max_connections:
                await self._refuse_connection(writer, client, "connection-cap", 503,
                                              "too many connections")
            elif self._served[client] >= limits.max_connections_per_client:
                await self._refuse_connection(writer, client, "client-connection-cap", 429,
                                              "too many connections from your address")
            else:
                self._served[client] += 1
                try:
                    await self._serve(reader, writer, client)
                finally:
                    self._served[client] -= 1
                    if not self._served[client]:
                        del self._served[client]
            await _linger(reader, writer)
        except OSError:  # TimeoutError and ConnectionError among them
            pass  # the client went away or was too slow: nothing (more) to answer
        except asyncio.CancelledError:
            pass  # the dashboard is stopping (``__aexit__`` cancels its connections)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _refuse_connection(self, writer: asyncio.StreamWriter, client: str, reason: str,
                                 status: int, message: str) -> None:
        self.app.refusals.note(reason, client=client, detail=message)
        async with asyncio.timeout(self._limits.request_timeout_s):
            await self._send(h11.Connection(h11.SERVER), writer, Response.error(status, message),
                             close=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     client: str) -> None:
        limits = self._limits
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        while True:
            try:
                async with asyncio.timeout(limits.request_timeout_s):
                    request = await self._read_request(conn, reader, client)
            except _Reject as reject:
                await self._answer(conn, writer, reject.response, close=True)
                return
            except h11.RemoteProtocolError as exc:
                self.app.refusals.note("malformed", client=client, detail=str(exc))
                response = Response.error(exc.error_status_hint, _protocol_message(exc))
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._answer(conn, writer, response, close=True)
                return
            except TimeoutError:
                if conn.their_state is not h11.IDLE or conn.trailing_data[0]:
                    # part of a request came, not all of it in time: say so, then close
                    message = (f"request not complete within {limits.request_timeout_s:g} s")
                    self.app.refusals.note("request-timeout", client=client, detail=message)
                    await self._answer(h11.Connection(h11.SERVER), writer,
                                       Response.error(408, message), close=True)
                return  # otherwise an idle keep-alive connection: close it without a word
            if request is None:
                return
            await self._take_turn(client)
            try:
                response = self.app.handle(request)
            except Exception:  # our bug: log it, answer 500, never send a traceback
                log.exception("dashboard: %s %s failed", request.method, request.target)
                response = Response.error(500, "internal error (see the gateway log)")
            await self._answer(conn, writer, response, close=False)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _take_turn(self, client: str) -> None:
        """Wait until ``client`` may have another request answered (``HttpLimits``)."""
        loop = asyncio.get_running_loop()
        while (wait_s := self._requests.wait_s(client, now_s=loop.time())) > 0:
            await asyncio.sleep(wait_s)
        self._requests.spend(client, now_s=loop.time())

    async def _answer(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                      response: Response, *, close: bool) -> None:
        """Send ``response``; a client that does not take it within the deadline is cut off."""
        async with asyncio.timeout(self._limits.request_timeout_s):
            await self._send(conn, writer, response, close=close)

    async def _next_event(self, conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Event:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                assert not isinstance(event, type)  # PAUSED cannot occur: we never switch protocols
                return event
            conn.receive_data(await reader.read(_READ_CHUNK))

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, client: str
    ) -> Request | None:
        """The next whole request; None when the client closed the connection between requests."""
        limits = self._limits
        event = await self._next_event(conn, reader)
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request)
        if len(event.headers) > limits.max_headers:
            raise self._reject(client, "too-many-headers", 431, "too many headers",
                               limit=limits.max_headers)
        # h11 bounds only a header block still arriving; one that came in a single read is
        # measured here, so the limit does not depend on how the client's bytes were split.
        size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
        if size > limits.max_header_bytes:
            raise self._reject(client, "header-block-too-large", 431,
                               "request header block too large", limit=limits.max_header_bytes)
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers}
        length = headers.get("content-length")
        if length is not None and int(length) > limits.max_body_bytes:
            raise self._reject(client, "body-too-large", 413, "request body too large",
                               limit=limits.max_body_bytes)
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
                raise self._reject(client, "body-too-large", 413, "request body too large",
                                   limit=limits.max_body_bytes)
        return Request(method=event.method.decode("ascii"), target=event.target.decode("ascii"),
                       headers=headers, body=bytes(body), client=client)

    def _reject(self, client: str, reason: str, status: int, message: str,
                **detail: Any) -> _Reject:
        self.app.refusals.note(reason, client=client, detail=message)
        return _Reject(Response.error(status, message, **detail))

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
