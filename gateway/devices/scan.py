"""``gridpeer devices scan``: what the gateway would make of a device, before it is configured.

An installer points it at a device (``tcp://HOST:PORT`` or ``rtu:///dev/ttyUSB0?baud=9600``,
``--unit N``) and reads: where the SunSpec map is, every model in it, and for each kind of device
a gateway config may name, whether the gateway can drive the device as that kind, through which
models, what one reading gives and what it would command through which points, or why not.
The scan only reads: nothing is written to the device.

Exit status: 0 when the map was read (with ``--kind``: when the gateway can drive the device as
that kind, its first reading succeeded and every command is carried), 1 otherwise (no answer, no
SunSpec map; with ``--kind``: a device the gateway would only read, or not at all).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.devices.capability import Command
from gateway.devices.discovery import DiscoveredDevice, discover
from gateway.devices.errors import DeviceError, MissingModel
from gateway.devices.plausibility import Uses
from gateway.devices.registry import DRIVERS, open_bus
from protocols.sunspec.models import ModelError, load_model

FIRST_TIMEOUT_S = 5.0
"""The first answer of a device just woken or behind a TCP-to-RS-485 gateway can be slow."""


@dataclass(frozen=True, slots=True)
class KindReport:
    """The device as one kind: ``refused`` says why the gateway cannot drive it as this kind;
    otherwise ``family``, ``uses`` and ``commands`` say how, and ``reading`` (or ``read_error``)
    what its first reading gave."""

    kind: str
    refused: str | None = None
    family: str | None = None
    uses: Uses | None = None
    reading: object | None = None
    read_error: str | None = None
    commands: tuple[Command, ...] = ()

    @property
    def status(self) -> str:
        """"yes": read and every command carried; "read only": a command refused; "no"."""
        if self.refused is not None or self.read_error is not None:
            return "no"
        return "read only" if any(c.refused for c in self.commands) else "yes"


@dataclass(frozen=True, slots=True)
class ScanReport:
    url: str
    device: DiscoveredDevice
    kinds: tuple[KindReport, ...]


async def scan(url: str, *, unit: int, kinds: Sequence[str], timeout_s: float,
               first_timeout_s: float) -> ScanReport:
    """Discover ``unit`` at ``url`` and try each of ``kinds`` on it (one read each, no write)."""
    async with open_bus(url, timeout_s=timeout_s, first_timeout_s=first_timeout_s) as bus:
        device = await discover(bus, unit=unit)
        reports = []
        for kind in kinds:
            try:
                driver = DRIVERS[kind](bus=bus, device=device)
            except MissingModel as exc:
                reports.append(KindReport(kind=kind, refused=str(exc)))
                continue
            reading: object | None = None
            error = None
            try:
                reading = await driver.read()
            except DeviceError as exc:
                error = f"{type(exc).__name__}: {exc}"
            reports.append(KindReport(kind=kind, family=driver.family, uses=driver.uses,
                                      reading=reading, read_error=error,
                                      commands=driver.commands))
    return ScanReport(url=url, device=device, kinds=tuple(reports))


def render(report: ScanReport) -> str:
    """The report as an installer reads it."""
    dev, common = report.device, report.device.common
    lines = [f"{report.url} unit {dev.unit}: SunSpec map at {dev.base_address}, "
             f"{len(dev.chain)} models",
             f"  {common.manufacturer} {common.model}, serial {common.serial}"
             + (f", version {common.version}" if common.version else ""),
             "", "  model  length  address  name"]
    for loc in dev.chain:
        lines.append(f"  {loc.model_id:>5}  {loc.length:>6}  {loc.address:>7}  "
                     f"{_model_name(loc.model_id)}")
    for kind in report.kinds:
        lines.append("")
        if kind.refused is not None:
            lines.append(f"as {kind.kind}: no. {kind.refused}")
            continue
        lines.append(f"as {kind.kind}: {kind.status}, through {kind.family}")
        lines.append(f"  reads {_uses(kind.uses, dev)}")
        if kind.read_error is not None:
            lines.append(f"  first reading failed: {kind.read_error}")
        elif kind.reading is not None:
            lines.append(f"  first reading: {_fields(kind.reading)}")
        for command in kind.commands:
            lines.append(f"  commands {_command(command)}")
        if not kind.commands:
            lines.append("  commands nothing (read only)")
    return "\n".join(lines)


def add_devices_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``gridpeer devices scan`` on the CLI's subparsers."""
    devices = subparsers.add_parser("devices", help="check Modbus devices before configuring them")
    dsub = devices.add_subparsers(dest="devices_command", required=True, metavar="ACTION")
    p = dsub.add_parser(
        "scan", help="the SunSpec models a device presents and what the gateway can drive",
        description="Reads the device's SunSpec map and tries each device kind on it; writes "
                    "nothing. Exit status 0: the map was read (with --kind: the gateway reads "
                    "and commands it as that kind); 1: it could not be (with --kind: the "
                    "gateway would only read it, or not at all).")
    p.add_argument("url", help="tcp://HOST:PORT or rtu:///dev/ttyUSB0?baud=9600")
    p.add_argument("--unit", type=_unit, default=1, help="Modbus unit id, 1-247 (default 1)")
    p.add_argument("--kind", choices=sorted(DRIVERS), help="only this kind of device")
    p.add_argument("--timeout", type=_seconds, default=1.0,
                   help="seconds to wait for each answer (default 1)")
    p.add_argument("--first-timeout", type=_seconds, default=FIRST_TIMEOUT_S,
                   help=f"seconds to wait for the first answer (default {FIRST_TIMEOUT_S:g})")
    p.set_defaults(func=_cmd_scan)


def _cmd_scan(args: argparse.Namespace) -> int:
    _check_url(args.url)
    # pymodbus logs each failed connect; the scan's own one line says what failed.
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    kinds = [args.kind] if args.kind else list(DRIVERS)
    report = asyncio.run(scan(args.url, unit=args.unit, kinds=kinds, timeout_s=args.timeout,
                              first_timeout_s=max(args.timeout, args.first_timeout)))
    print(render(report))
    return 0 if not args.kind or report.kinds[0].status == "yes" else 1


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme == "tcp" and parts.hostname and port is not None:
        return
    if parts.scheme == "rtu" and parts.path:
        return
    raise ValueError(f"{url!r}: give tcp://HOST:PORT or rtu:///dev/ttyUSB0?baud=9600")


def _unit(text: str) -> int:
    unit = int(text)
    if not 1 <= unit <= 247:
        raise argparse.ArgumentTypeError(f"unit must be 1-247, got {unit}")
    return unit


def _seconds(text: str) -> float:
    seconds = float(text)
    if not 0 < seconds <= 60:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 60 s, got {text}")
    return seconds


def _model_name(model_id: int) -> str:
    try:
        return load_model(model_id).name
    except ModelError:
        return "(no definition known: skipped)"


def _uses(uses: Uses | None, device: DiscoveredDevice) -> str:
    if uses is None:
        return "every point of its models"
    return "; ".join(f"{model} {', '.join(points)}" for model, points in uses.items()
                     if device.location(model) is not None)


def _fields(reading: object) -> str:
    if not dataclasses.is_dataclass(reading):
        return repr(reading)
    return ", ".join(f"{f.name} {_shown(getattr(reading, f.name))}"
                     for f in dataclasses.fields(reading))


def _shown(value: object) -> str:
    """A float as the device meant it (a float32 230.1 is 230.10000610351562 as a double)."""
    return f"{value:.6g}" if isinstance(value, float) and abs(value) < 1e6 else str(value)


def _command(command: Command) -> str:
    if command.refused is not None:
        return f"no {command.what}: {command.refused}"
    return f"the {command.what} through {command.model} {', '.join(command.points)}"
