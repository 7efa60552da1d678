"""``gridpeer demo``: a simulated day of a community, with a report (:mod:`sim_devices.demo`).

The demo lives with the simulator, not in the field gateway: it is imported inside the command,
so building the CLI's parser loads no ``sim_devices`` or ``firmware`` module
(``tests/test_layering.py``).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from gateway.cli.args import UsageError, positive_float, positive_int


def _cmd_demo(args: argparse.Namespace) -> int:
    from sim_devices.demo.community import CommunityError
    from sim_devices.demo.run import DEFAULT_SPEED, BaselineError, run_demo
    from sim_devices.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    try:
        return asyncio.run(run_demo(
            scenario=scenario, out=args.out, intervals=args.intervals, seed=args.seed,
            speed=DEFAULT_SPEED if args.speed is None else args.speed, broker_url=args.broker))
    except (CommunityError, BaselineError) as exc:
        raise UsageError(str(exc)) from None


def add_demo_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``demo [--scenario S] [--broker URL] [--out DIR] [--intervals N] ...``."""
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
