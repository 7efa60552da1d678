"""Errors nobody expected in the node's own tasks: counted by task and type, logged once.

Neither a device nor a bug stops the node. An error in the controller or the trader is counted
here (``control_faults``, shown in the status and /metrics), logged with its traceback once while
the same one repeats, and the node answers it with the safe state: a gateway that stopped instead
would leave its devices on their last setpoints and, restarted by its service into the same
report, stop again.
"""

from __future__ import annotations

import logging
from collections import Counter

from gateway.aio import raise_if_cancelling

log = logging.getLogger(__name__)


class Faults:
    """The node's unexpected errors, by ``"task/ExceptionType"``."""

    def __init__(self, *, node: str) -> None:
        self.node = node
        self.counts: Counter[str] = Counter()
        self._last: dict[str, str] = {}  # by task: logged once while it repeats

    def record(self, task: str, exc: Exception) -> str:
        """Count and log ``exc`` from ``task`` ("controller" or "trader"); returns its line.
        A cancellation that came out as another error is raised again, never counted."""
        raise_if_cancelling(exc)
        kind = f"{task}/{type(exc).__name__}"
        self.counts[kind] += 1
        text = f"{kind}: {exc}"
        if text != self._last.get(task):
            log.error("%s: unexpected error in the %s, safe state: %s", self.node, task, text,
                      exc_info=exc)
        self._last[task] = text
        return text

    def clear(self, task: str) -> None:
        """``task`` ran a whole step without error: its next fault is logged again."""
        self._last.pop(task, None)
