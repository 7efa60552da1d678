"""A cancel that an awaited call swallowed (Python 3.11's timeout races) still stops the task."""

import asyncio

import pytest

from gateway.aio import raise_if_cancelling


async def _swallows_a_cancel() -> str:
    """What 3.11's ``wait_for`` can do when its timeout and a cancel land together."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        return "acked"
    return "slept"


async def test_a_loop_that_publishes_stops_when_its_cancel_was_swallowed() -> None:
    rounds = 0

    async def publisher() -> None:
        nonlocal rounds
        while True:  # a trader: publish, then wait for the next interval
            rounds += 1
            assert await _swallows_a_cancel() == "acked"
            raise_if_cancelling()

    task = asyncio.create_task(publisher())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)
    assert rounds == 1


async def test_a_timeout_that_hides_a_cancel_is_raised_as_the_cancel() -> None:
    async def retries() -> None:
        while True:
            try:
                await _swallows_a_cancel()
                raise TimeoutError
            except TimeoutError as exc:
                raise_if_cancelling(exc)

    task = asyncio.create_task(retries())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)


async def test_nothing_is_raised_without_a_cancel() -> None:
    raise_if_cancelling()
    raise_if_cancelling(TimeoutError())
