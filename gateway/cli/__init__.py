"""The ``gridpeer`` command: one entry point for homeowners, installers and engineers.

Every subcommand turns bad input into one clear line on stderr and exit status 2 (usage) or 1
(the thing asked for failed); a traceback means a bug in gridpeer.

One module per command group registers its arguments and imports what it drives inside the
command: the homeowner's (``home``: init, run, status), the community authority's
(``community``), ``flash``, ``ledger``, and the simulator's (``demo``, ``sim``), which live
outside the field gateway; building the parser loads no ``sim_devices`` or ``firmware`` module
(``tests/test_layering.py``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from gateway.cli.args import UsageError
from gateway.cli.community import add_community_parser
from gateway.cli.demo import add_demo_parser
from gateway.cli.flash import add_flash_parser
from gateway.cli.home import add_home_parsers
from gateway.cli.ledger import add_ledger_parser
from gateway.cli.sim import add_sim_parser
from gateway.config import ConfigError
from gateway.identity import IdentityError
from gateway.ledger import LedgerError

__all__ = ["UsageError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from gateway.dashboard.command import add_dashboard_parser
    from gateway.devices.scan import add_devices_parser

    parser = argparse.ArgumentParser(
        prog="gridpeer", description="Peer-to-peer energy trading for neighbourhood microgrids."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_demo_parser(sub)
    add_home_parsers(sub)
    add_community_parser(sub)
    add_flash_parser(sub)
    add_devices_parser(sub)
    add_sim_parser(sub)
    add_dashboard_parser(sub)
    add_ledger_parser(sub)
    return parser


_EXPECTED: tuple[type[Exception], ...] = (
    UsageError, ConfigError, IdentityError, LedgerError, ValueError, OSError,
)


def _expected_errors() -> tuple[type[Exception], ...]:
    """Errors shown as one line: the ones above plus device and market faults at start-up."""
    from gateway.devices.errors import DeviceError
    from gateway.market.peerlink import PeerLinkError
    from protocols.market import MarketError

    return (*_EXPECTED, DeviceError, MarketError, PeerLinkError)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not getattr(args, "configures_logging", False):
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _expected_errors() as exc:
        print(f"gridpeer: {exc}", file=sys.stderr)
        return 1
