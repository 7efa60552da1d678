"""``gridpeer sim run SCENARIO``: serve a scenario's simulated devices for external gateways and
HIL rigs (:mod:`sim_devices.runner`); ``gridpeer sim compare [SCENARIO ...]``: the same seeded
day under every clearing mechanism, the optimiser and no market (:mod:`sim_devices.demo.compare`).

The simulator is imported inside the command, never at parse time: the field gateway's CLI
loads no ``sim_devices`` or ``firmware`` module unless this command runs
(``tests/test_layering.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.cli.args import UsageError, positive_float, positive_int
from protocols.clearing import MECHANISMS

_COMPARE = """Run the same seeded day of each SCENARIO once per way, one run after the other,
through real gateways, devices over Modbus, a broker and signed bids: under each clearing
mechanism (every home planning with the heuristic), with the optimiser under the scenario's own
mechanism, and without the market. Prints one table per scenario and writes it with a
self-contained page to OUT/<scenario>/compare.txt and compare.html: traded kWh, price range,
self-sufficiency, welfare as a share of the efficient maximum of the bids, the community bill,
each home's saving against no market and their spread. The runs are on virtual time: a busy host
makes them slower, never changes what they show; a full day takes about a minute per way on an
idle 2-core host."""


def add_sim_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``sim run SCENARIO [--speed X] [--dt-ms N] [--rtu] [--host H]``."""
    sim = subparsers.add_parser("sim", help="simulated devices for gateways and test rigs")
    actions = sim.add_subparsers(dest="sim_command", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="serve a scenario's devices over Modbus until Ctrl-C")
    run.add_argument("scenario", help="a shipped scenario (sunny-street, dc-bus-cluster, "
                     "feeder-100) or the path of a .toml file")
    run.add_argument("--speed", type=positive_float,
                     help="simulated seconds per real second (default: the scenario's)")
    run.add_argument("--dt-ms", type=positive_int,
                     help="physics step in simulated ms (default: the scenario's); a coarser "
                     "step serves a large scenario at high speed with less CPU")
    run.add_argument("--rtu", action="store_true",
                     help="also serve every device as Modbus RTU unit 1 on its own pty")
    run.add_argument("--host", default="127.0.0.1",
                     help="address to serve Modbus TCP on (default: 127.0.0.1)")
    run.set_defaults(func=cmd_sim_run)
    compare = actions.add_parser(
        "compare", help="the same seeded day under every mechanism, the optimiser and no "
        "market: one table and one page", description=_COMPARE)
    compare.add_argument("scenarios", nargs="*", default=["sunny-street"], metavar="SCENARIO",
                         help="shipped scenarios' names or .toml files (default: sunny-street)")
    compare.add_argument("--mechanism", action="append", choices=list(MECHANISMS),
                         metavar="NAME", help="run this mechanism (repeat for several; default: "
                         f"all of {', '.join(MECHANISMS)})")
    compare.add_argument("--no-optimiser", dest="optimiser", action="store_false",
                         help="leave out the run with every home planning with the optimiser")
    compare.add_argument("--intervals", type=positive_int, help="intervals to run "
                         "(default: one day)")
    compare.add_argument("--out", type=Path, default=Path("gridpeer-compare"),
                         help="folder for each run's keys, ledgers and the tables "
                         "(default: ./gridpeer-compare)")
    compare.set_defaults(func=cmd_sim_compare, configures_logging=True)  # to each run's files


def cmd_sim_run(args: argparse.Namespace) -> int:
    """0 after a clean stop; a bad scenario raises ``ScenarioError`` (a ``ValueError``)."""
    from sim_devices.runner import run_until_stopped

    return run_until_stopped(args.scenario, speed=args.speed, dt_ms=args.dt_ms, host=args.host,
                             rtu=args.rtu)


def cmd_sim_compare(args: argparse.Namespace) -> int:
    """0 once every scenario's table is written; every scenario is loaded (and a bad one
    refused) before the first run starts."""
    from sim_devices.demo.community import CommunityError
    from sim_devices.demo.compare import compare
    from sim_devices.scenario import load_scenario

    scenarios = [load_scenario(name) for name in args.scenarios]
    mechanisms = list(dict.fromkeys(args.mechanism or MECHANISMS))
    try:
        compare(scenarios, out=args.out, mechanisms=mechanisms, optimiser=args.optimiser,
                intervals=args.intervals)
    except CommunityError as exc:
        raise UsageError(str(exc)) from None
    return 0
