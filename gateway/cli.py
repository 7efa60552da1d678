"""The ``gridpeer`` command: one entry point for homeowners, installers and engineers.

Every subcommand turns bad input into one clear line on stderr and exit status 2 (usage) or 1
(the thing asked for failed); a traceback means a bug in gridpeer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway.config import ConfigError
from gateway.identity import IdentityError
from gateway.ledger import Ledger, LedgerError, NotALedger
from protocols.ledger import Check, Expected, LedgerView, compare

log = logging.getLogger("gridpeer")

_CONFIG_TEMPLATE = """\
# gridpeer gateway configuration. Edit, then run `gridpeer run --config {config}`.
# Units: energy Wh, power W, prices in micro-units per Wh (0.30 per kWh = 300).

node = "{node}"                       # this home's node id, as admitted by the community
key_file = "{key}"                    # Ed25519 key made by `gridpeer init` (owner-only)
certificate_file = "node.cert"        # from the installer: `gridpeer community admit`
state_dir = "state"                   # ledger, forecast profile, logs

[market]
community = "{community}"
broker = "mqtt://127.0.0.1:1883"      # the community broker (mqtts:// with TLS in the field)
authority_key = "{authority}"         # the community authority's public key (hex)
mechanism = "uniform"                 # uniform, trade-reduction, mmr, sdr, bill-sharing, cda
interval_s = 900                      # trading interval
gate_s = 60                           # bids close this long before the interval starts
grace_s = 10                          # wait for late bids before clearing
# With an mqtts:// broker: the files `gridpeer community broker-config` issued for this node.
# tls_ca = "tls/ca.crt"                # the community CA
# tls_cert = "tls/{node}.crt"          # this node's client certificate (CN = node id)
# tls_key = "tls/{node}.key"

[tariffs]
retail_price = 300                    # what the grid charges (µ/Wh)
feed_in_price = 80                    # what the grid pays (µ/Wh)

[preferences]
min_sell_price = 120                  # never sell below this
max_buy_price = 250                   # never buy above this
reserve_pct = 20                      # keep this much battery for yourself
# ev_ready_by = "07:30"               # when the EV must be charged

[dashboard]                           # the local web page, JSON API and /metrics
host = "127.0.0.1"                    # "0.0.0.0" to open it to your home network
port = 8080

# [homeassistant]                     # optional: sensors appear in Home Assistant
# broker = "mqtt://homeassistant.local:1883"

[envelope]                            # hard limits, whatever the market says
soc_min_pct = 10
soc_max_pct = 95
max_charge_w = 5000
max_discharge_w = 5000
ramp_w_per_s = 1000
revert_s = 60                         # devices return to safe defaults if not refreshed

# One [[devices]] table per device; url is tcp://host:port or rtu:///dev/ttyUSB0?baud=9600
[[devices]]
name = "meter"
kind = "meter"
url = "tcp://192.168.1.20:502"

[[devices]]
name = "battery"
kind = "battery"
url = "tcp://192.168.1.21:502"
"""


class UsageError(Exception):
    """The command line asked for something that cannot be done; shown without a traceback."""


def _cmd_init(args: argparse.Namespace) -> int:
    from gateway.identity import create_key_file
    from protocols.signing import public_key_hex

    folder: Path = args.dir
    config = folder / "gridpeer.toml"
    if config.exists():
        raise UsageError(f"{config} already exists; not overwriting it")
    key = create_key_file(folder / "node.key")
    config.write_text(
        _CONFIG_TEMPLATE.format(
            config=config, node=args.node, key="node.key", community=args.community,
            authority=args.authority_key,
        )
    )
    print(f"wrote {config} and {folder / 'node.key'} (mode 600)")
    print(f"node public key: {public_key_hex(key)}")
    print("give this key to your community installer to be admitted (`gridpeer community admit`)")
    return 0


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
        from gateway.brokerconfig import revoke_at_broker

        revoke_at_broker(args.broker_dir, community=args.community, node=args.node)
    return 0


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


async def _run_gateway(config_path: Path) -> int:
    import signal

    from gateway.clock import Clock
    from gateway.config import load_config
    from gateway.home import GatewayNode
    from gateway.identity import load_certificate, load_key_file

    config = load_config(config_path)
    envelope, cert = load_certificate(config.certificate_file)
    key = load_key_file(config.key_file)
    from protocols.signing import public_key_hex

    if cert.node != config.node or cert.public_key != public_key_hex(key):
        raise UsageError(
            f"{config.certificate_file}: certificate is for node {cert.node!r} with another key; "
            f"it does not match node {config.node!r} and {config.key_file}"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    node = GatewayNode(config=config, key=key, certificate=envelope, clock=Clock.wall())
    log.info("starting gateway", extra={"node": config.node, "broker": config.market.broker})
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(node)
        runner = asyncio.create_task(node.run(), name="gateway")
        stack.push_async_callback(_cancel, runner)  # stopped and awaited before the node closes
        if config.dashboard.enabled:
            from gateway.dashboard import Dashboard

            board = await stack.enter_async_context(Dashboard(
                node=node, host=config.dashboard.host, port=config.dashboard.port))
            log.info("dashboard at %s", board.url, extra={"url": board.url})
        if config.homeassistant is not None:
            from gateway.dashboard.homeassistant import HomeAssistantBridge

            ha = config.homeassistant
            bridge = await stack.enter_async_context(HomeAssistantBridge(
                node=node, broker_url=ha.broker, period_s=ha.period_s, prefix=ha.prefix,
                username=ha.username, password=ha.password))
            stack.push_async_callback(_cancel, asyncio.create_task(bridge.run(), name="ha"))
        stopper = asyncio.create_task(stop.wait(), name="stop")
        stack.push_async_callback(_cancel, stopper)
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            runner.result()  # the gateway stopped by itself: raise its error
    log.info("gateway stopped", extra={"node": config.node})
    return 0


async def _cancel(task: asyncio.Task[object]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway import logs

    logs.configure(verbose=args.verbose)
    return asyncio.run(_run_gateway(args.config))


def _signed_w(value: int | None) -> str:
    """A power for the status line; a battery without model 802 reports no measured power."""
    return "not reported" if value is None else f"{value:+d} W"


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from gateway.config import load_config
    from gateway.home.status import Status

    config = load_config(args.config)
    path = config.state_dir / "status.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"{path}: no status yet (is `gridpeer run` running?)") from None
    if args.json:
        print(json.dumps(json.loads(text), indent=1))
        return 0
    try:
        status = Status.from_json(text)
    except ValueError as exc:
        raise UsageError(f"{path}: not a gateway status: {exc}") from None
    age_s = (time.time_ns() // 1_000_000 - status.now_ms) / 1000
    print(f"node {status.node}: {status.mode} mode"
          + (f" ({status.safe_reason})" if status.safe_reason else "")
          + f", status {age_s:.0f} s old")
    for name, dev in status.devices.items():
        state = "STALE" if dev.stale else "ok"
        print(f"  device {name:8} {state:5} polls {dev.polls}, failures {dev.failures}"
              + (f", last error: {dev.last_error}" if dev.last_error else ""))
    if b := status.battery:
        print(f"  battery SoC {b.soc_pct:.1f} %, power {_signed_w(b.power_w)}, "
              f"setpoint {_signed_w(b.setpoint_w)}")
    bid = status.bid
    print("  current bid: " + (f"{bid.side} {bid.energy_wh} Wh at {bid.limit_price} µ/Wh "
                              f"for interval {bid.interval}" if bid else "none"))
    if last := status.last_clearing:
        own = last.outcome or {}
        print(f"  last clearing: interval {last.interval} {last.status}, "
              f"price {last.price} µ/Wh, bought {own.get('bought_wh', 0)} Wh, "
              f"sold {own.get('sold_wh', 0)} Wh")
    else:
        print("  last clearing: none yet")
    print(f"  money today: {-status.money_today / 1e6:+.4f} (+ = earned)")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.community import CommunityError
    from gateway.demo import DEFAULT_SPEED, BaselineError, run_demo
    from sim_devices.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    try:
        return asyncio.run(run_demo(
            scenario=scenario, out=args.out, intervals=args.intervals, seed=args.seed,
            speed=DEFAULT_SPEED if args.speed is None else args.speed, broker_url=args.broker))
    except (CommunityError, BaselineError) as exc:
        raise UsageError(str(exc)) from None


def _public_key(text: str) -> str:
    """An Ed25519 public key as typed: 64 lowercase hex digits naming a point no forger can use
    (:func:`protocols.keycheck.key_problem`)."""
    from protocols.keycheck import key_problem

    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise argparse.ArgumentTypeError("expected 64 lowercase hex characters (an Ed25519 key)")
    weak = key_problem(text)
    if weak is not None:
        raise argparse.ArgumentTypeError(
            f"{text[:8]}...: {weak} Ed25519 point, not a usable public key (copy the key "
            "`gridpeer init` or `gridpeer community init` printed)")
    return text


def build_parser() -> argparse.ArgumentParser:
    from sim_devices.runner import add_sim_parser, positive_float, positive_int

    parser = argparse.ArgumentParser(
        prog="gridpeer", description="Peer-to-peer energy trading for neighbourhood microgrids."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="a simulated day of a community, with a report")
    demo.add_argument("--scenario", default="sunny-street",
                      help="a shipped scenario's name or a scenario .toml file "
                           "(default: sunny-street)")
    demo.add_argument("--broker", metavar="mqtt://host:port",
                      help="an external MQTT broker (default: an embedded one)")
    demo.add_argument("--out", type=Path, default=Path("gridpeer-demo"),
                      help="folder for keys, ledgers, logs and report.html "
                           "(default: ./gridpeer-demo)")
    demo.add_argument("--intervals", type=positive_int,
                      help="intervals to run (default: one day)")
    demo.add_argument("--seed", type=int, help="seed of the simulated world "
                                               "(default: the scenario's)")
    demo.add_argument("--speed", type=positive_float,
                      help="simulated seconds per real second (default: 1440, a day in about "
                           "a minute; 720 on a slow or busy host)")
    demo.set_defaults(func=_cmd_demo, configures_logging=True)

    run = sub.add_parser("run", help="run the gateway service")
    run.add_argument("--config", type=Path, default=Path("gridpeer.toml"),
                     help="the gateway's config (default: ./gridpeer.toml; make one with init)")
    run.set_defaults(func=_cmd_run, configures_logging=True)

    status = sub.add_parser("status", help="devices, SoC, current bid, last clearing, money")
    status.add_argument("--config", type=Path, default=Path("gridpeer.toml"),
                        help="the running gateway's config (default: ./gridpeer.toml)")
    status.add_argument("--json", action="store_true", help="print the raw status")
    status.set_defaults(func=_cmd_status)

    init = sub.add_parser("init", help="write a commented config and a new node key")
    init.add_argument("--dir", type=Path, default=Path("."), help="where to write them")
    init.add_argument("--node", default="home-1", help="this home's node id")
    init.add_argument("--community", default="my-street", help="the community id")
    init.add_argument("--authority-key", type=_public_key, required=True,
                      help="the community authority's public key, hex (from your installer: "
                           "`gridpeer community init` printed it)")
    init.set_defaults(func=_cmd_init)

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
        p.add_argument("--public-key", type=_public_key, required=True,
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

    from gateway.brokerconfig import add_broker_config_parser
    from gateway.dashboard.command import add_dashboard_parser
    from gateway.devices.scan import add_devices_parser
    from gateway.flash import add_flash_parser
    from gateway.revocation import add_publish_revocation_parser

    add_broker_config_parser(csub)
    add_publish_revocation_parser(csub)
    add_flash_parser(sub)
    add_devices_parser(sub)
    add_sim_parser(sub)
    add_dashboard_parser(sub)

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
    verify.add_argument("--public-key", type=_public_key,
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
