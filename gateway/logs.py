"""Structured logs: one JSON object per line, so journald, Loki or ``jq`` can filter them.

A homeowner reads ``journalctl -u gridpeer``; an engineer greps by ``logger`` or ``level``. Extra
fields passed with ``log.info(..., extra={"interval": k})`` become keys of their own.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure(*, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("amqtt", "transitions", "pymodbus", "aiomqtt"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def worth_logging(count: int) -> bool:
    """Whether the ``count``-th occurrence of something is worth a line: the 1st, 10th, 100th...
    Every one is counted; a peer repeating a fault 10,000 times must not also write 10,000 lines
    on a Pi's SD card."""
    while count % 10 == 0:
        count //= 10
    return count == 1
