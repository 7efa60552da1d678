"""Helpers for the served-world tests: waiting on simulated time, never on wall-clock speed."""

import asyncio
from collections.abc import Callable

from sim_devices.world import World


async def until(world: World, condition: Callable[[], bool], *, sim_s: float) -> bool:
    """Wait until ``condition()`` holds or ``sim_s`` simulated seconds have passed."""
    deadline = world.now_s + sim_s
    while not condition():
        if world.now_s > deadline:
            return condition()
        await asyncio.sleep(0.005)
    return True
