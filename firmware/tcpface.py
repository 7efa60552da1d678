"""The board's Modbus TCP face: a listening socket, its accept loop and six client slots.

A thin asyncio adapter over ``firmware.modbus.tcp.TcpServer`` (one per client, with its two
260-byte buffers, over the board's one register bank), the same code under MicroPython's asyncio
and CPython's. Two rules keep a board reachable on a small heap and a lossy LAN:

- A ``MemoryError`` costs the one client it struck. Everything a client takes (its slot, its
  buffers, its reads) is inside one ``try`` whose ``finally`` gives the slot back and closes the
  socket. The accept loop is our own, not ``asyncio.start_server``: MicroPython's accept loop
  dies on the first ``MemoryError`` it meets and leaves the board deaf until reboot; ours drops
  the connection it could not take and accepts the next.
- A client with no answered request for ``idle_s`` is closed (``Clients.expire``, run by the
  board's tick): a gateway that loses power or Wi-Fi leaves a half-open connection that no FIN
  will ever end, and six of those would lock every other client out until reboot.

docs/hil-guide.md tells how both were found on the MicroPython unix port.
"""

import asyncio
import gc

from firmware.compat import const, ticks_diff, ticks_ms
from firmware.modbus.tcp import TcpServer

_MAX_ADU = const(260)
_MAX_CLIENTS = const(6)  # a gateway, a logger, an installer's laptop, and slack
_ACCEPT_POLL_S = 0.02  # how long a new client may wait to be accepted
IDLE_S = 60  # no answered request for this long closes a client (a gateway polls every second)


class Clients:
    """The connection slots: at most ``_MAX_CLIENTS`` clients at once, so a flood of connections
    cannot exhaust the heap. A slot is the client's task and the ticks of its last answered
    request, in two preallocated lists.

    Counters: ``served`` clients taken, ``refused`` turned away with every slot taken,
    ``expired`` closed idle, ``reset`` by their peer, ``starved`` dropped on a ``MemoryError``.
    """

    def __init__(self, idle_s=IDLE_S):
        self.idle_ms = int(idle_s * 1000)
        self.tasks = [None] * _MAX_CLIENTS
        self.seen = [0] * _MAX_CLIENTS
        self.served = 0
        self.refused = 0
        self.expired = 0
        self.reset = 0
        self.starved = 0

    @property
    def open(self):
        return _MAX_CLIENTS - self.tasks.count(None)

    def claim(self, task):
        """A free slot for ``task`` (its idle clock starts now), or -1 when all are taken."""
        for i in range(_MAX_CLIENTS):
            if self.tasks[i] is None:
                self.tasks[i] = task
                self.seen[i] = ticks_ms()
                self.served += 1
                return i
        self.refused += 1
        return -1

    def release(self, slot, task):
        """Give ``slot`` back, unless ``expire`` already did and another client holds it now."""
        if slot >= 0 and self.tasks[slot] is task:
            self.tasks[slot] = None

    def expire(self):
        """Free the slot of every client idle for more than ``idle_ms`` and cancel its task
        (whose ``finally`` closes the socket)."""
        now = ticks_ms()
        for i in range(_MAX_CLIENTS):
            task = self.tasks[i]
            if task is not None and ticks_diff(now, self.seen[i]) > self.idle_ms:
                self.tasks[i] = None
                self.expired += 1
                task.cancel()


def listen(host, port):
    """A non-blocking socket listening on ``host:port`` (raises ``OSError`` if it cannot)."""
    import socket  # here: the WebAssembly port has none and never calls this

    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(socket.getaddrinfo(host, port)[0][-1])
        sock.listen(_MAX_CLIENTS)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_tcp(board, sock, clients):
    """Answer Modbus TCP on the listening ``sock`` until cancelled, then close it."""
    try:
        while True:
            try:
                conn, _ = sock.accept()
            except (OSError, MemoryError):  # nobody waiting (EAGAIN), or no heap for one now
                await asyncio.sleep(_ACCEPT_POLL_S)
                continue
            try:
                conn.setblocking(False)
                reader, writer = await _streams(conn)
                asyncio.create_task(_client(board, clients, reader, writer))
            except MemoryError:
                clients.starved += 1
                conn.close()
    finally:
        sock.close()


if hasattr(asyncio, "StreamReaderProtocol"):  # CPython builds a reader and a writer

    async def _streams(conn):
        return await asyncio.open_connection(sock=conn)

else:  # MicroPython: one Stream is both. Taken now, so its module loads at boot, not with the
    _Stream = asyncio.StreamReader  # first client (which would need 2 kB more than the next)

    async def _streams(conn):
        stream = _Stream(conn)
        return stream, stream


async def _client(board, clients, reader, writer):
    task = asyncio.current_task()
    slot = -1
    server = data = reply = None
    try:
        slot = clients.claim(task)
        if slot < 0:
            return
        server = TcpServer(board.bank)
        while not server.closed:
            data = await reader.read(_MAX_ADU)
            if not data:
                break
            reply = server.feed(data)
            data = None  # between requests a client pins nothing but its two buffers
            if reply:
                writer.write(reply)
                reply = None
                await writer.drain()
                clients.seen[slot] = ticks_ms()
    except OSError:  # peer reset: only this connection is lost
        clients.reset += 1
    except MemoryError:  # no heap for this client now: drop it, serve the others
        clients.starved += 1
    finally:
        clients.release(slot, task)
        server = data = reply = None
        gc.collect()  # before closing, which needs a little heap too
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:  # CPython reports the reset again here
            pass
        except MemoryError:  # not even that: close MicroPython's socket (its Stream's .s) as is
            writer.s.close()
