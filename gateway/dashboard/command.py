"""``gridpeer dashboard pair``: the owner's token for the dashboard's login, printed on the Pi.

Run where the gateway runs (``sudo /opt/gridpeer/bin/gridpeer dashboard pair --config
/etc/gridpeer/gridpeer.toml``): only someone who can do that gets to change the gateway's
preferences from a browser.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.dashboard.pairing import CREDENTIAL_FILE, CredentialFile, OwnerCredential


def _cmd_pair(args: argparse.Namespace) -> int:
    from gateway.config import load_config

    config = load_config(args.config)
    path = config.state_dir / CREDENTIAL_FILE
    credential, token = OwnerCredential.new()
    CredentialFile(path=path).save(credential)
    print(f"dashboard owner token: {token}")
    print("Type it into the dashboard's login form (on the page of the gateway, under "
          "Preferences). It is shown only now: the gateway keeps only its hash, in "
          f"{path}.")
    print("Pairing again makes a new token and logs every browser out.")
    return 0


def add_dashboard_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``gridpeer dashboard pair`` on the CLI's subparsers."""
    dashboard = sub.add_parser("dashboard", help="the local dashboard: log in as the owner")
    dsub = dashboard.add_subparsers(dest="dashboard_command", required=True, metavar="ACTION")
    pair = dsub.add_parser("pair", help="print a new owner token for the dashboard's login "
                                        "(and log every browser out)")
    pair.add_argument("--config", type=Path, default=Path("gridpeer.toml"),
                      help="the gateway's config (default: ./gridpeer.toml)")
    pair.set_defaults(func=_cmd_pair)
