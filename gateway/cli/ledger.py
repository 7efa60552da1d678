"""``gridpeer ledger verify|export``: check a gateway's ledger (read-only) or print it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.cli.args import public_key
from gateway.ledger import Ledger, LedgerError, NotALedger
from protocols.ledger import Check, Expected, LedgerView, compare


def _open_ledger(path: Path) -> Ledger:
    return Ledger.open(path)  # read-only: nothing about the file changes


VERIFY_INTACT, VERIFY_FAILED, VERIFY_NOT_A_LEDGER = 0, 1, 3
"""``ledger verify`` exit statuses: every check it could make passed; a check failed (the
ledger was rewritten, cut or replaced); the file is no ledger it can check (another file, or
the old unsigned format). 2 is a usage error, as for every command."""


def _cmd_ledger_verify(args: argparse.Namespace) -> int:
    expected = _expected_owner(args)
    try:
        with _open_ledger(args.ledger) as ledger:
            checks, view = ledger.audit(expected=expected)
    except NotALedger as exc:
        print(f"gridpeer: {exc}", file=sys.stderr)
        return VERIFY_NOT_A_LEDGER
    except LedgerError as exc:
        print(f"gridpeer: {exc}", file=sys.stderr)
        return VERIFY_FAILED
    if view is not None:
        if not args.against:
            checks.append(Check("tail", False, "a cut-off tail was not looked for: that takes a "
                                "second witness (--against a neighbour's ledger)"))
        for witness in args.against:
            checks.append(_witness_check(view, witness))
    print(f"{args.ledger}: " + (f"ledger of node {view.node}, {len(view.blocks)} blocks"
                                if view is not None else "ledger"))
    for check in checks:
        state = "FAILED" if check.failed else "ok" if check.made else "not checked"
        print(f"  {state:11} {check.name}: {check.summary}")
        for problem in check.problems:
            print(f"{args.ledger}: {problem}", file=sys.stderr)
    failed = [c.name for c in checks if c.failed]
    skipped = [c.name for c in checks if not c.made]
    if failed:
        print(f"{args.ledger}: NOT intact: failed {', '.join(failed)}", file=sys.stderr)
        return VERIFY_FAILED
    print(f"{args.ledger}: intact in every check made"
          + (f"; not checked: {', '.join(skipped)}" if skipped else ""))
    return VERIFY_INTACT


def _expected_owner(args: argparse.Namespace) -> Expected:
    """Who the ledger must belong to: from the verifier's gateway config and certificate, or
    ``--node``/``--public-key``."""
    from gateway.config import load_config
    from gateway.identity import load_certificate

    if args.config is None:
        return Expected(node=args.node, public_key=args.public_key)
    config = load_config(args.config)
    _, cert = load_certificate(config.certificate_file)
    return Expected(node=args.node or config.node, public_key=args.public_key or cert.public_key,
                    authority_key=config.market.authority_key, community=config.market.community)


def _witness_check(view: LedgerView, path: Path) -> Check:
    """The comparison with a neighbour's ledger, if that ledger itself verifies."""
    name = str(path)
    try:
        with _open_ledger(path) as witness:
            checks, theirs = witness.audit()
    except LedgerError as exc:
        return Check(f"witness {name}", False, f"unusable as a witness: {exc}")
    broken = [p for c in checks for p in c.problems]
    if theirs is None or broken:
        return Check(f"witness {name}", False,
                     f"unusable as a witness: it does not verify itself ({broken[0]})")
    return compare(view, theirs, name=name)


def _cmd_ledger_export(args: argparse.Namespace) -> int:
    with _open_ledger(args.ledger) as ledger:
        sys.stdout.write(ledger.export_csv() if args.csv else ledger.dump_json() + "\n")
    return 0


def add_ledger_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``ledger verify`` and ``ledger export``."""
    ledger = sub.add_parser("ledger", help="inspect a gateway's ledger")
    lsub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    verify = lsub.add_parser(
        "verify", help="check a ledger's signatures, chain and quorums (read-only)",
        description="Exit status: 0 every check made passed (the ones not made are named), "
                    "1 a check failed, 3 not a gridpeer ledger this version can check.")
    verify.add_argument("ledger", type=Path, help="a ledger file (STATE_DIR/ledger.db)")
    verify.add_argument("--config", type=Path,
                        help="this home's gridpeer.toml: the ledger must be its node's (node, "
                             "key from its certificate, community, authority)")
    verify.add_argument("--node", help="the node the ledger must belong to")
    verify.add_argument("--public-key", type=public_key,
                        help="the key the ledger must be signed with, hex")
    verify.add_argument("--against", type=Path, action="append", default=[],
                        metavar="NEIGHBOUR_LEDGER",
                        help="a neighbour's ledger, a second witness: finds a cut-off tail and "
                             "changed settlements or results (repeatable)")
    verify.set_defaults(func=_cmd_ledger_verify)
    export = lsub.add_parser("export", help="print the ledger (JSON, or CSV for billing)")
    export.add_argument("ledger", type=Path, help="a ledger file (STATE_DIR/ledger.db)")
    export.add_argument("--csv", action="store_true",
                        help="one row per interval for billing, instead of JSON")
    export.set_defaults(func=_cmd_ledger_export)
