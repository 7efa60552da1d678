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
