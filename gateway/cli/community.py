"""``gridpeer community ...``: the community authority's (installer's) commands: the authority
key, membership certificates and revocations, the broker's TLS config, publishing a revocation.
The installer's tools (:mod:`gateway.installer`) are imported inside each command."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
from pathlib import Path

from gateway.cli.args import positive_int, public_key


def _cmd_community_init(args: argparse.Namespace) -> int:
    from gateway.identity import create_key_file
    from protocols.signing import public_key_hex

    key = create_key_file(args.key)
    print(f"community authority key written to {args.key} (keep it offline)")
    print(f"authority public key: {public_key_hex(key)}")
    return 0


def _cmd_community_admit(args: argparse.Namespace) -> int:
    from gateway.identity import load_key_file, save_envelope
    from protocols.messages import MembershipCertificate
    from protocols.signing import sign

    authority = load_key_file(args.key)
    now_ms = time.time_ns() // 1_000_000
    cert = MembershipCertificate(
        community=args.community, node=args.node, public_key=args.public_key, bus=args.bus,
        import_limit_w=args.import_limit_w, export_limit_w=args.export_limit_w,
        valid_from_ms=now_ms, valid_until_ms=now_ms + int(args.days * 86_400_000),
    )
    save_envelope(args.out, sign("cert", cert, authority))
    print(f"certificate for {args.node} written to {args.out} (valid {args.days:g} days)")
    return 0


def _cmd_community_revoke(args: argparse.Namespace) -> int:
    from gateway.identity import load_key_file, save_envelope
    from protocols.messages import Revocation
    from protocols.signing import sign

    authority = load_key_file(args.key)
    revocation = Revocation(
        community=args.community, node=args.node, public_key=args.public_key,
        revoked_at_ms=time.time_ns() // 1_000_000,
    )
    save_envelope(args.out, sign("revoke", revocation, authority))
    print(f"revocation of {args.node} written to {args.out}; publish it with "
          f"`gridpeer community publish-revocation {args.out} --broker URL ...`")
    if args.broker_dir is None:
        print(f"warning: {args.node}'s broker certificate still gets it in; run again with "
              "--broker-dir (the folder `gridpeer community broker-config` wrote)",
              file=sys.stderr)
    else:
        from gateway.installer.brokerconfig import revoke_at_broker

        revoke_at_broker(args.broker_dir, community=args.community, node=args.node)
    return 0


def add_community_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``community init|admit|revoke|broker-config|publish-revocation``."""
    community = sub.add_parser("community", help="community authority (installer) commands")
    csub = community.add_subparsers(dest="community_command", required=True, metavar="ACTION")
    cinit = csub.add_parser("init", help="make the community authority key")
    cinit.add_argument("--key", type=Path, default=Path("authority.key"),
                       help="where to write the authority's private key (default: ./authority.key)")
    cinit.set_defaults(func=_cmd_community_init)
    for name, func, helptext in (
        ("admit", _cmd_community_admit, "sign a membership certificate for a node's key"),
        ("revoke", _cmd_community_revoke, "sign a revocation of a node's key"),
    ):
        p = csub.add_parser(name, help=helptext)
        p.add_argument("--key", type=Path, default=Path("authority.key"),
                       help="the authority's private key (default: ./authority.key)")
        p.add_argument("--community", required=True, help="the community id")
        p.add_argument("--node", required=True, help="the home's node id")
        p.add_argument("--public-key", type=public_key, required=True,
                       help="the node's public key, hex (printed by `gridpeer init`)")
        p.add_argument("--out", type=Path, required=True, help="file to write")
        if name == "revoke":
            p.add_argument("--broker-dir", type=Path,
                           help="the broker's folder from `gridpeer community broker-config`: "
                                "puts the node's certificate on its CRL and denies it in its "
                                "ACL (then reload the broker)")
        if name == "admit":
            p.add_argument("--bus", default="bus-1", help="the node's bus on the feeder")
            p.add_argument("--import-limit-w", type=positive_int, default=10_000)
            p.add_argument("--export-limit-w", type=positive_int, default=10_000)
            p.add_argument("--days", type=float, default=365, help="validity in days")
        p.set_defaults(func=func)
    _add_broker_config_parser(csub)
    _add_publish_revocation_parser(csub)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a TCP port 1-65535, got {text!r}")
    return int(text)


def _cmd_broker_config(args: argparse.Namespace) -> int:
    from gateway.installer.brokerconfig import write_broker_config

    files, written = write_broker_config(
        out=args.out, community=args.community, nodes=args.node, hostnames=args.hostname,
        port=args.port, data_dir=args.data_dir, bridge_to=args.bridge_to, run_as=args.run_as,
        now=dt.datetime.now(dt.UTC),
    )
    for path in written:
        print(f"wrote {path}")
    print(f"start the broker: mosquitto -c {files.config}")
    if args.bridge_to is not None:
        print(f"second site: copy {files.root} there and run mosquitto -c {files.bridged_config}")
    print(f"give each node {files.root / 'ca.crt'} and its nodes/<id>.crt and nodes/<id>.key; "
          f"keep {files.ca_key} offline")
    return 0


def _add_broker_config_parser(
    community_subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    from gateway.installer.brokerconfig import DEFAULT_PORT

    parser = community_subparsers.add_parser(
        "broker-config",
        help="write a Mosquitto config with TLS, client certificates and a per-node ACL",
    )
    parser.add_argument("--community", required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for certificates, config")
    parser.add_argument("--node", action="append", required=True,
                        help="a node to issue a client certificate for (repeat for each)")
    parser.add_argument("--hostname", action="append", default=[],
                        help="a name or IP the nodes dial (repeat; localhost is always in)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help="TLS listener port")
    parser.add_argument("--data-dir", type=Path, help="persistence folder (default: OUT/data)")
    parser.add_argument("--bridge-to", type=_host_port, metavar="HOST:PORT",
                        help="also write mosquitto-bridge.conf for a second site bridged to "
                             "the main broker at HOST:PORT")
    parser.add_argument("--run-as", metavar="USER", default=None,
                        help="account mosquitto switches to when started as root "
                             "(default: mosquitto's own, 'mosquitto')")
    parser.set_defaults(func=_cmd_broker_config)


def _cmd_publish_revocation(args: argparse.Namespace) -> int:
    from gateway.installer.revocation import RevocationError, publish_revocation
    from gateway.tls import TlsFiles

    files = (args.tls_ca, args.tls_cert, args.tls_key)
    if None not in files:
        tls: TlsFiles | None = TlsFiles(ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key)
    elif files == (None, None, None):
        tls = None
    else:
        raise RevocationError("give all of --tls-ca, --tls-cert and --tls-key, or none")
    topic = asyncio.run(publish_revocation(args.revocation, broker_url=args.broker, tls=tls))
    print(f"published {args.revocation} retained on {topic}; every gateway drops the node's "
          "messages from its next check on")
    return 0


def _add_publish_revocation_parser(
    community_subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    parser = community_subparsers.add_parser(
        "publish-revocation", help="publish a signed revocation (from `revoke`) on the broker")
    parser.add_argument("revocation", type=Path, help="the file `gridpeer community revoke` wrote")
    parser.add_argument("--broker", required=True,
                        help="the community broker, mqtts://host:8883 (or mqtt:// without TLS)")
    parser.add_argument("--tls-ca", type=Path, help="the community CA (ca.crt)")
    parser.add_argument("--tls-cert", type=Path,
                        help="the authority's client certificate (authority.crt from "
                             "`gridpeer community broker-config`)")
    parser.add_argument("--tls-key", type=Path, help="its key (authority.key)")
    parser.set_defaults(func=_cmd_publish_revocation)
