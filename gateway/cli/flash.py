"""``gridpeer flash``: put the firmware on a board, give it an identity and a key, check it
answers (:mod:`gateway.installer.flash`, imported inside the command)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path


def _cmd_flash(args: argparse.Namespace) -> int:
    from gateway.installer.flash import FlashError, flash

    def progress(line: str) -> None:
        print(line, flush=True)

    try:
        asyncio.run(flash(port=args.port, role=args.role, device_id=args.device_id,
                          unit=args.unit, baud=args.baud, tcp_port=args.tcp_port,
                          key_out_dir=args.key_dir, progress=progress, verify=args.verify,
                          host=args.host, rtu_port=args.rtu_port))
    except FlashError as exc:
        print(f"gridpeer flash: {exc}", file=sys.stderr)
        return 1
    return 0


def add_flash_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``gridpeer flash``."""
    from gateway.installer.flash import BAUDS, ROLES, VERIFY

    p = subparsers.add_parser("flash", help="flash a MicroPython board with gridpeer firmware")
    p.add_argument("--port", required=True, help="the board's serial port (e.g. /dev/ttyUSB0)")
    p.add_argument("--role", required=True, choices=ROLES, help="what the board is")
    p.add_argument("--device-id", required=True, help="its serial number (1-32 of A-Za-z0-9._-)")
    p.add_argument("--unit", type=int, default=1, help="Modbus unit address (default 1)")
    p.add_argument("--baud", type=int, default=9600, choices=BAUDS, help="RS-485 baud rate")
    p.add_argument("--tcp-port", type=int, default=502, help="Modbus TCP port (default 502)")
    p.add_argument("--key-dir", type=Path, default=Path("keys"),
                   help="where to keep the metering key for the gateway (default ./keys)")
    p.add_argument("--verify", choices=VERIFY, default="rtu",
                   help="how to read back the common model (default rtu at --port)")
    p.add_argument("--host", help="the board's address, for --verify tcp")
    p.add_argument("--rtu-port", help="RS-485 adapter, for --verify rtu if not --port")
    p.set_defaults(func=_cmd_flash)
