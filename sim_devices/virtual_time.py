"""An asyncio event loop on virtual time: a simulated day whose outcome does not depend on the host.

A real-time run at ``speed`` × the wall clock lets a busy host make gateways late: their control
steps, bids and commitments slip, and the day's outcome (who abstained, what each home paid)
changes with the machine's load. On this loop, time stands still while anything can run and
jumps to the next timer only when every task waits on a timer: a starved process is slower, never
later. The gateway reads time through :func:`gateway.clock.monotonic`, the running loop's clock,
so its scaled clocks, its pollers, every timeout and the world's physics all agree.

Sockets stay real: the Modbus servers, the broker and the gateways talk over loopback TCP in this
one process. Loopback usually delivers within the sender's system call, so a message sent is
readable before time may move; on a loaded host, though, a segment can become readable only
after the loop has looked and found nothing, and time moves first. No gateway is late by it (a
step waits for its reply whatever the clock), but the day is not reproducible to the µ: two runs
of the same no-market dynamic-street day differed by 3,390 µ of a 9.79 M µ community bill, with
the hash seed fixed. Work handed to threads (SQLite writes, ``asyncio.to_thread``) holds the
clock until it is back. What cannot be held is another process (an external broker): every part
that talks to another runs in the one process on this loop (a day's no-market baseline, which
talks to nothing, may run alone in a process of its own, on its own virtual loop).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_THREAD_POLL_S = 0.05
"""How long one real wait for a thread's work lasts before the loop looks again."""


class _VirtualSelector(selectors.DefaultSelector):
    """A selector whose waits are instant: I/O that is ready is returned at once; otherwise the
    loop's clock moves to the end of the wait (the next timer), unless a thread still works."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        while self._clock.threads:
            ready = super().select(_THREAD_POLL_S)
            if ready:
                return ready
        if timeout is None:  # no timer: only I/O or a thread started elsewhere can wake the loop
            return super().select(None)
        self._clock.now += timeout
        return []


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.threads = 0


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` is virtual (see the module's docstring)."""

    def __init__(self) -> None:
        self._virtual = _Clock()
        super().__init__(_VirtualSelector(self._virtual))

    def time(self) -> float:
        return self._virtual.now

    def run_in_executor(self, executor: Any, func: Callable[..., T],  # type: ignore[override]
                        *args: Any) -> asyncio.Future[T]:
        self._virtual.threads += 1
        future = super().run_in_executor(executor, func, *args)
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _future: asyncio.Future[Any] | Future[Any]) -> None:
        self._virtual.threads -= 1


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a :class:`VirtualTimeLoop`."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)
