"""``gridpeer sim run SCENARIO``: serve a scenario's simulated devices for external gateways and
HIL rigs (:mod:`sim_devices.runner`).

The simulator is imported inside the command, never at parse time: the field gateway's CLI
loads no ``sim_devices`` or ``firmware`` module unless this command runs
(``tests/test_layering.py``).
"""

from __future__ import annotations

import argparse

from gateway.cli.args import positive_float, positive_int


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


def cmd_sim_run(args: argparse.Namespace) -> int:
    """0 after a clean stop; a bad scenario raises ``ScenarioError`` (a ``ValueError``)."""
    from sim_devices.runner import run_until_stopped

    return run_until_stopped(args.scenario, speed=args.speed, dt_ms=args.dt_ms, host=args.host,
                             rtu=args.rtu)
