"""Power flow on a radial feeder: what each line carries, what it loses, which lines are overloaded.

The market (``protocols/network.py``) limits the *energy traded* across a line per interval; this
is the physics underneath: the *power* a line carries at one instant, given every bus's net power
(+ = the bus draws from the feeder, − = it injects). On a radial feeder that needs no solver: a
line carries exactly what its subtree draws plus the losses of the lines inside it, so one pass
from the leaves to the substation settles every line.

Losses are I²R with the current approximated from power at a fixed nominal voltage,
``loss = R · (P / V)²``, rounded to whole watts per line. That is the usual first-order estimate
(voltage drop and reactive power ignored), good to a few percent on a low-voltage feeder, and it
keeps the substation balance exact in integers: ``substation_w == Σ net_w + Σ loss_w``.

Pure and deterministic: powers in W (``int``), resistance in Ω, voltage in V.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from protocols.network import Feeder, Line, NetworkError

__all__ = ["FeederFlows", "FeederLine", "LineFlow", "NetworkError", "RadialFeeder", "bus_net_w"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FeederLine:
    """The line from ``bus`` up to ``parent`` (towards the substation).

    ``capacity_w`` is the thermal rating as power at the nominal voltage; ``length_m`` only
    matters to the market's network fees (``for_market``).
    """

    bus: str
    parent: str
    capacity_w: int
    resistance_ohm: float
    length_m: int = 0

    def __post_init__(self) -> None:
        if self.capacity_w <= 0:
            raise NetworkError(f"line {self.bus}: capacity_w must be > 0, got {self.capacity_w}")
        if self.resistance_ohm < 0:
            raise NetworkError(
                f"line {self.bus}: resistance_ohm must be >= 0, got {self.resistance_ohm}")


@dataclass(frozen=True, slots=True)
class LineFlow:
    """One line at one instant. ``end_w`` is taken out at the bus end (+ = towards the homes);
    the parent end feeds ``send_w = end_w + loss_w`` in (less than ``|end_w|`` when exporting)."""

    bus: str
    parent: str
    end_w: int
    loss_w: int
    capacity_w: int

    @property
    def send_w(self) -> int:
        return self.end_w + self.loss_w

    @property
    def peak_w(self) -> int:
        """The larger of the two ends' powers: what the rating is checked against."""
        return max(abs(self.end_w), abs(self.send_w))

    @property
    def overloaded(self) -> bool:
        return self.peak_w > self.capacity_w

    @property
    def loading_pct(self) -> float:
        return 100.0 * self.peak_w / self.capacity_w


@dataclass(frozen=True, slots=True)
class FeederFlows:
    """Every line's flow, the substation's import (+) or export (−) and the total line losses."""

    lines: tuple[LineFlow, ...]
    substation_w: int
    loss_w: int

    @property
    def overloaded(self) -> tuple[LineFlow, ...]:
        return tuple(line for line in self.lines if line.overloaded)

    def line(self, bus: str) -> LineFlow:
        for flow in self.lines:
            if flow.bus == bus:
                return flow
        raise KeyError(f"no line below bus {bus!r}")


class RadialFeeder:
    """A radial feeder (a tree rooted at the substation bus ``root``) at a nominal voltage."""

    def __init__(self, *, root: str, lines: Iterable[FeederLine], nominal_v: float) -> None:
        if nominal_v <= 0:
            raise NetworkError(f"nominal_v must be > 0, got {nominal_v}")
        self.root = root
        self.nominal_v = nominal_v
        self.lines = tuple(sorted(lines, key=lambda ln: ln.bus))
        # The market's feeder checks the tree (one line up per bus, no loops, all reach the root).
        topology = self.for_market(interval_s=3600)
        depth = {ln.bus: len(topology.path(ln.bus, root)[0]) for ln in self.lines}
        self._leaves_first = sorted(self.lines, key=lambda ln: (-depth[ln.bus], ln.bus))
        self.buses = topology.buses

    def for_market(self, *, interval_s: int) -> Feeder:
        """The same feeder as the market sees it: each line's rating as energy per interval."""
        return Feeder(root=self.root, lines=[
            Line.rated(bus=ln.bus, parent=ln.parent, length_m=ln.length_m,
                       capacity_w=ln.capacity_w, interval_s=interval_s)
            for ln in self.lines])

    def flows(self, net_w: Mapping[str, int]) -> FeederFlows:
        """Line flows and losses when each bus draws ``net_w[bus]`` (missing buses draw 0)."""
        unknown = sorted(set(net_w) - self.buses)
        if unknown:
            raise NetworkError(f"net power given for unknown buses {unknown}")
        downstream: dict[str, int] = {}  # what the lines below a bus take from it (send ends)
        flows = []
        for line in self._leaves_first:
            end = net_w.get(line.bus, 0) + downstream.get(line.bus, 0)
            loss = round(line.resistance_ohm * (end / self.nominal_v) ** 2)
            flow = LineFlow(line.bus, line.parent, end, loss, line.capacity_w)
            downstream[line.parent] = downstream.get(line.parent, 0) + flow.send_w
            flows.append(flow)
        flows.sort(key=lambda f: f.bus)
        substation = net_w.get(self.root, 0) + downstream.get(self.root, 0)
        return FeederFlows(tuple(flows), substation, sum(f.loss_w for f in flows))


def bus_net_w(power_w: Mapping[str, int], *, bus_of: Mapping[str, str]) -> dict[str, int]:
    """Sum each home's net power (meter, + = import) onto its bus."""
    net: dict[str, int] = {}
    for home, power in power_w.items():
        try:
            bus = bus_of[home]
        except KeyError:
            raise NetworkError(f"home {home!r} is on no bus") from None
        net[bus] = net.get(bus, 0) + power
    return net
