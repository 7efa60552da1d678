"""asyncio helpers the whole gateway relies on."""

from __future__ import annotations

import asyncio


def raise_if_cancelling(cause: BaseException | None = None) -> None:
    """Re-raise a cancellation that an awaited call turned into something else.

    On Python 3.11 (Raspberry Pi OS's Python), when ``asyncio.timeout`` or ``asyncio.wait_for``
    expires in the same loop iteration as an outside ``cancel()``, the cancel can come out as a
    ``TimeoutError`` (pass it as ``cause``), or the awaited call can even return normally through
    it (aiomqtt waits for a PUBACK that way). Code that then retries, sleeps or publishes again
    would never finish cancelling, and a TaskGroup would wait for it forever on shutdown. Call
    this first in every ``except`` that catches a timeout and carries on, and right after such
    an await (fixed in 3.12).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from cause
