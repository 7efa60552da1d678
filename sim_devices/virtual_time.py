"""An asyncio event loop on virtual time: a simulated day whose outcome does not depend on the host.

A real-time run at ``speed`` × the wall clock lets a busy host make gateways late: their control
steps, bids and commitments slip, and the day's outcome (who abstained, what each home paid)
changes with the machine's load. On this loop, time stands still while anything can run and
jumps to the next timer only when every task waits on a timer: a starved process is slower, never
later. The gateway reads time through :func:`gateway.clock.monotonic`, the running loop's clock,
so its scaled clocks, its pollers, every timeout and the world's physics all agree.

The same code on the same seed makes the same day, event for event and to the µ, however busy
the host; three things would otherwise let the host's timing in:

- **Threads.** Work handed to a thread (``asyncio.to_thread``; aiomqtt connects in one) holds the
  whole loop until it is back, so nothing else runs meanwhile and its result is handled at the
  same point of the day however long it took.
- **The kernel's timers on sockets.** Sockets stay real: the Modbus servers, the broker and the
  gateways talk over loopback TCP in this one process. A socket that waits for the peer's
  acknowledgement before sending a small segment (Nagle's algorithm; paho's MQTT socket does)
  would let that segment out after the peer's delayed-ACK timer, in real time. Every TCP socket
  the loop watches gets ``TCP_NODELAY``.
- **Bytes in flight.** Loopback usually delivers within the sender's system call, but on a busy
  host the kernel may hand the delivery (or a segment it corked) to a thread of its own. Before
  every look at its sockets, the loop waits (in real time) until every byte written on one of its
  TCP connections has reached the other end when that end is its own too (the kernel counts both),
  then serves what is ready in file-descriptor order, not in the order it happened to land.

Each wait has a limit in real time, so a thread or a connection that needs something outside the
loop cannot hang the day: past it the loop goes on, logs a warning and counts a *lapse*
(:attr:`VirtualTimeLoop.lapses`); a day with none is reproducible. What cannot be held is another
process (an external broker): every part that talks to another runs in the one process on this
loop (a day's no-market baseline, which talks to nothing, may run alone in a process of its own,
on its own virtual loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import selectors
import socket
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

_THREAD_HOLD_S = 30.0
"""The longest real wait for one thread's work with the loop held; past it the loop goes on."""
_THREAD_POLL_S = 0.05
"""How long one real wait for a thread past its hold lasts before the loop looks again."""
_LANDING_POLL_S = 0.0002
"""How long one real wait for bytes in flight on loopback lasts before the loop counts again."""
_LANDING_LIMIT_S = 1.0
"""The longest real wait for bytes in flight before the loop goes on."""
_TCP_INFO = struct.Struct("=128xQ8xI52xQQ")
"""Linux ``struct tcp_info`` up to ``tcpi_bytes_retrans``: ``tcpi_bytes_received`` at offset 128,
``tcpi_notsent_bytes`` at 144, ``tcpi_bytes_sent`` and ``tcpi_bytes_retrans`` at 200 (Linux 4.19
and later)."""

_Address = tuple[Any, ...]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.threads = 0
        """Threads still working past their hold: the clock waits for them, the loop does not."""
        self.lapses = 0


class _Connections:
    """The TCP connections the loop watches, by file descriptor, and whether bytes are in flight
    between two of them."""

    def __init__(self, clock: _Clock) -> None:
        self._clock = clock
        self._ends: dict[int, tuple[socket.socket, tuple[_Address, _Address]]] = {}
        self._pairs: list[tuple[socket.socket, socket.socket]] | None = None
        """Both ends of each connection whose two ends are watched (None: to be paired again)."""

    def watch(self, fd: int) -> None:
        """Turn Nagle's algorithm off on ``fd`` if it is a TCP socket, and count its bytes if it
        is connected; anything else (a pipe, a Unix socket) is left alone."""
        self.forget(fd)
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            return
        try:
            if sock.family not in (socket.AF_INET, socket.AF_INET6) \
                    or sock.type != socket.SOCK_STREAM:
                sock.detach()
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._ends[fd] = sock, (sock.getsockname(), sock.getpeername())
            self._pairs = None
        except OSError:  # listening, or not connected yet: watched again when it is
            sock.detach()

    def forget(self, fd: int) -> None:
        end = self._ends.pop(fd, None)
        if end is not None:
            end[0].detach()  # the socket is its owner's to close
            self._pairs = None

    def forget_all(self) -> None:
        for fd in list(self._ends):
            self.forget(fd)

    def _paired(self) -> list[tuple[socket.socket, socket.socket]]:
        if self._pairs is None:
            by_ends = {ends: (fd, sock) for fd, (sock, ends) in self._ends.items()}
            self._pairs = [(sock, other[1]) for (local, peer), (fd, sock) in by_ends.items()
                           if (other := by_ends.get((peer, local))) is not None and fd < other[0]]
        return self._pairs

    def in_flight(self) -> bool:
        """Whether bytes written on one end of a watched connection whose other end is watched
        too have not been received there yet (written but unsent ones included)."""
        for one, other in self._paired():
            try:
                one_info = one.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
                other_info = other.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO,
                                              _TCP_INFO.size)
            except OSError:  # closed by its owner, not yet unregistered
                continue
            if len(one_info) < _TCP_INFO.size or len(other_info) < _TCP_INFO.size:
                continue
            received, not_sent, sent, resent = _TCP_INFO.unpack(one_info)
            other_received, other_not_sent, other_sent, other_resent = \
                _TCP_INFO.unpack(other_info)
            if sent - resent + not_sent > other_received \
                    or other_sent - other_resent + other_not_sent > received:
                return True
        return False

    def await_landing(self) -> None:
        """Wait (real time) until no byte written on a watched connection is still in flight."""
        if not self.in_flight():
            return
        deadline = time.monotonic() + _LANDING_LIMIT_S
        while self.in_flight():
            if time.monotonic() > deadline:
                self._clock.lapses += 1
                log.warning("virtual time: bytes still in flight on loopback after %.1f s; "
                            "going on (this day may not be reproducible)", _LANDING_LIMIT_S)
                return
            time.sleep(_LANDING_POLL_S)


class _VirtualSelector(selectors.DefaultSelector):
    """A selector whose waits are instant: once the bytes in flight have landed, I/O that is ready
    is returned at once, in file-descriptor order; otherwise the loop's clock moves to the end of
    the wait (the next timer), unless a thread still works."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__()
        self._clock = clock
        self.connections = _Connections(clock)

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = super().register(fileobj, events, data)
        self.connections.watch(key.fd)
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        key = super().unregister(fileobj)
        self.connections.forget(key.fd)
        return key

    def close(self) -> None:
        self.connections.forget_all()
        super().close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.connections.await_landing()
        ready = self._select(0)
        if ready or timeout == 0:
            return ready
        while self._clock.threads:
            ready = self._select(_THREAD_POLL_S)
            if ready:
                return ready
        if timeout is None:  # no timer: only I/O or a thread started elsewhere can wake the loop
            return self._select(None)
        self._clock.now += timeout
        return []

    def _select(self, timeout: float | None) -> list[tuple[selectors.SelectorKey, int]]:
        return sorted(super().select(timeout), key=lambda event: event[0].fd)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` is virtual (see the module's docstring)."""

    def __init__(self) -> None:
        self._virtual = _Clock()
        super().__init__(_VirtualSelector(self._virtual))
        self._workers = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="virtual-time")
        self.set_default_executor(self._workers)

    def time(self) -> float:
        return self._virtual.now

    @property
    def lapses(self) -> int:
        """How many times the loop went on while a thread still worked or bytes were still in
        flight past their limit (0 in a reproducible run)."""
        return self._virtual.lapses

    def run_in_executor(self, executor: Any, func: Callable[..., T],  # type: ignore[override]
                        *args: Any) -> asyncio.Future[T]:
        """Run ``func`` in a thread and hold the loop until it is back (or past its hold)."""
        work: concurrent.futures.Future[T] = (executor or self._workers).submit(func, *args)
        concurrent.futures.wait([work], timeout=_THREAD_HOLD_S)
        future = asyncio.wrap_future(work, loop=self)
        if not work.done():
            self._virtual.lapses += 1
            log.warning("virtual time: a thread's work (%s) took over %.0f s; the loop goes on "
                        "meanwhile (this day may not be reproducible)",
                        getattr(func, "__qualname__", func), _THREAD_HOLD_S)
            self._virtual.threads += 1
            future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _future: asyncio.Future[Any]) -> None:
        self._virtual.threads -= 1


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a :class:`VirtualTimeLoop`."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)
