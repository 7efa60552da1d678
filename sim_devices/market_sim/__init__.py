"""Deterministic simulation of whole communities: the markets the gateways run, on a simulated
MQTT network, with faults and adversaries drawn from one seed, every invariant checked as it
goes (docs/reliability.md).

``scheduler``: simulated time; ``broker``: MQTT's rules; ``network``: the links and their
faults; ``members``: a home's market driven as its gateway drives it; ``adversaries``: members
that attack; ``faults``: the seed's fault windows; ``invariants``: what must hold; ``trace``:
the message trace and the run's fingerprint; ``opener``: one signature check per message for
all members; ``run``: one seed start to finish. No threads,
sockets, asyncio or wall time: ``run(seed)`` is the same run everywhere.
"""

from sim_devices.market_sim.invariants import Breach
from sim_devices.market_sim.run import Config, Report, run

__all__ = ["Config", "Report", "Breach", "run"]
