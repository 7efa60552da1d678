"""Skips that become failures in CI.

A test that needs something from outside Python (Node.js with the MicroPython port, the mosquitto
binary, a serial pty) skips on a developer's machine that lacks it, but CI sets
``GRIDPEER_REQUIRE_ALL=1`` so a missing dependency fails the run instead of hiding a test.
"""

import os

import pytest

REQUIRE_ALL = os.environ.get("GRIDPEER_REQUIRE_ALL") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip the calling test when ``condition`` is false, or fail it when CI requires everything."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"required in CI but missing: {reason}", pytrace=False)
    pytest.skip(reason)
