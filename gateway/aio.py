"""asyncio helpers the whole gateway relies on."""

from __future__ import annotations

import asyncio


def reraise_swallowed_cancel(exc: BaseException) -> None:
    """Re-raise a cancellation that a timeout turned into another error.

    On Python 3.11 (Raspberry Pi OS's Python), when ``asyncio.timeout`` or ``asyncio.wait_for``
    expires in the same loop iteration as an outside ``cancel()``, the cancel can come out as a
    ``TimeoutError`` (fixed in 3.12). Code that then retries or sleeps would never finish
    cancelling, and a TaskGroup would wait for it forever on shutdown. Call this first in every
    ``except`` that catches a timeout and carries on.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that an awaited call returned normally through.

    The same 3.11 race can also end ``wait_for`` with the awaited result instead of the cancel
    (aiomqtt waits for a PUBACK that way): the caller then goes on as if nothing happened, and a
    loop that publishes (a gateway's trader) outlives its TaskGroup's shutdown for good. Call
    this right after such an await.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
