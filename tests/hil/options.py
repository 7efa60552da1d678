"""The ``--hil-modbus`` / ``--hil-serial`` pytest options: which real device the HIL suite drives.

Registered from ``tests/conftest.py`` so ``pytest --help`` lists them. Without either option the
conformance suite runs against the simulated devices; with one it runs against that device only.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest


@dataclass(frozen=True, slots=True)
class RealTarget:
    """A device on the bench: Modbus TCP ``host:port`` or a serial port, and its unit id."""

    transport: str  # "tcp" or "rtu"
    where: str
    port: int
    unit: int
    baud: int
    revert_s: int

    @property
    def label(self) -> str:
        return f"real-{self.transport}"


def add_hil_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop device conformance (tests/hil)")
    group.addoption("--hil-modbus", metavar="tcp://HOST:PORT", default=None,
                    help="run tests/hil against the real device at this Modbus TCP address")
    group.addoption("--hil-serial", metavar="/dev/ttyX", default=None,
                    help="run tests/hil against the real device on this serial port (RTU)")
    group.addoption("--hil-unit", type=int, default=1, help="Modbus unit id of the real device")
    group.addoption("--hil-baud", type=int, default=19200, help="baud rate for --hil-serial")
    group.addoption("--hil-revert-s", type=int, default=5,
                    help="revert time (device seconds) used by the reversion check")


def real_target(config: pytest.Config) -> RealTarget | None:
    """The real device named on the command line, None for the simulated run."""
    tcp = config.getoption("--hil-modbus")
    serial = config.getoption("--hil-serial")
    if tcp and serial:
        raise pytest.UsageError("give --hil-modbus or --hil-serial, not both")
    unit = config.getoption("--hil-unit")
    if not 1 <= unit <= 247:
        raise pytest.UsageError(f"--hil-unit must be 1..247, got {unit}")
    common = {"unit": unit, "baud": config.getoption("--hil-baud"),
              "revert_s": config.getoption("--hil-revert-s")}
    if tcp:
        url = urlsplit(tcp)
        if url.scheme != "tcp" or not url.hostname or url.port is None:
            raise pytest.UsageError(f"--hil-modbus must look like tcp://HOST:PORT, got {tcp!r}")
        return RealTarget(transport="tcp", where=url.hostname, port=url.port, **common)
    if serial:
        return RealTarget(transport="rtu", where=serial, port=0, **common)
    return None
