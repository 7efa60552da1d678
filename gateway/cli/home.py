"""The homeowner's commands, run on the Pi: ``gridpeer init`` (a commented config and a node
key), ``gridpeer run`` (the gateway service) and ``gridpeer status`` (what the running gateway
last wrote to ``STATE_DIR/status.json``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from pathlib import Path

from gateway.cli.args import UsageError, public_key

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
# schedule = "tariff.csv"             # the community's tariff file, the same in every home

[preferences]
# Unset, the price wishes are 120 and 250, or the tariffs under a pool (mmr, sdr, bill-sharing).
# min_sell_price = 120                # never sell below this
# max_buy_price = 250                 # never buy above this
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
        if dev.adoption == "waiting":  # not in the home: absent or unsupported, tried again
            state = f"{(dev.why or 'absent').upper()}, next try in {dev.retry_in_s or 0:.0f} s"
        elif dev.adoption == "found":
            state = "FOUND, in the home from the next interval"
        print(f"  device {name:8} {state:5} polls {dev.polls}, failures {dev.failures}"
              + (f", missing: {dev.missing}" if dev.missing else "")
              + (f", last error: {dev.last_error}" if dev.last_error else ""))
    if b := status.battery:
        soc = "unknown" if b.soc_pct is None else f"{b.soc_pct:.1f} %"
        print(f"  battery SoC {soc}, power {_signed_w(b.power_w)}, "
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
    for what, counts in (("devices held idle", status.device_holds),
                         ("control faults", status.control_faults),
                         ("car not fed back", status.v2g_refusals),
                         ("meter readings refused", status.meter_rejections)):
        if counts:  # what needs the owner's or the installer's attention, counted by reason
            print(f"  {what}: "
                  + ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())))
    return 0


def add_home_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``run``, ``status`` and ``init``."""
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
    init.add_argument("--authority-key", type=public_key, required=True,
                      help="the community authority's public key, hex (from your installer: "
                           "`gridpeer community init` printed it)")
    init.set_defaults(func=_cmd_init)
