"""The safety envelope: the only way a setpoint reaches a device.

Whatever the market cleared, the battery is never asked to charge above its SoC window or power
limit, never asked to discharge below its reserve, and never ramped faster than the installer
allows; a DC-DC converter never carries more than its current limit, never works the battery past
the same limits, and never runs on a bus outside its voltage window. Clamping is explicit: every
limit that bit is returned, so the dispatcher can log and count why the physical setpoint differs
from the cleared one.

What a device reports only ever narrows the envelope. A report that leaves nothing to work with
holds the battery still rather than being an error: a gateway that stopped on a device's word
would leave the battery on its last setpoint until the revert timer ran out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

_UNBOUNDED_STEP_W = float(2**62)
"""A ramp step past any setpoint: what a fast ramp over a long step comes to, kept an integer."""


@dataclass(frozen=True, slots=True)
class BatteryEnvelope:
    soc_min_pct: float
    soc_max_pct: float
    max_charge_w: int
    max_discharge_w: int
    ramp_w_per_s: float
    held: str = ""
    """Why the battery must stay still ("" when it may move): what its device reported leaves
    no safe way to move it. A held envelope has both power limits at 0, so every setpoint clamps
    to idle."""

    def __post_init__(self) -> None:
        if not 0 <= self.soc_min_pct < self.soc_max_pct <= 100:
            raise ValueError(
                f"SoC window must satisfy 0 <= min < max <= 100, got "
                f"[{self.soc_min_pct}, {self.soc_max_pct}]"
            )
        if (self.max_charge_w < 0 or self.max_discharge_w < 0
                or not 0 < self.ramp_w_per_s < math.inf):
            raise ValueError("power limits must be >= 0 and the ramp rate finite and > 0")

    def within_device(
        self, *, max_charge_w: float, max_discharge_w: float, soc_min_pct: float | None,
        soc_max_pct: float | None,
    ) -> BatteryEnvelope:
        """This envelope narrowed by what the device itself reports: the stricter limit wins.

        Never raises and never widens: whatever the device reports, the result is at least as
        strict as this envelope and as the device. A report that leaves no window to work in
        (a minimum at or above the maximum, as a backup-mode inverter reports with a minimum of
        100 %, or no overlap with ours) or a limit that is not a number holds the battery still
        (``held`` says why): idle is safe whatever the cells' real state.
        """
        lo = max(self.soc_min_pct, 0.0 if soc_min_pct is None else soc_min_pct)
        hi = min(self.soc_max_pct, 100.0 if soc_max_pct is None else soc_max_pct)
        reported = (max_charge_w, max_discharge_w, soc_min_pct or 0.0, soc_max_pct or 0.0)
        if not all(math.isfinite(x) for x in reported):
            return self.holding(f"the device reports a limit that is not a number: "
                                f"charge {max_charge_w} W, discharge {max_discharge_w} W, "
                                f"SoC window [{soc_min_pct}, {soc_max_pct}] %")
        if not lo < hi:
            return self.holding(
                f"the device's SoC window [{_pct(soc_min_pct)}, {_pct(soc_max_pct)}] % leaves "
                f"nothing inside ours [{self.soc_min_pct:g}, {self.soc_max_pct:g}] %")
        return replace(
            self, soc_min_pct=lo, soc_max_pct=hi,
            max_charge_w=min(self.max_charge_w, max(0, int(max_charge_w))),
            max_discharge_w=min(self.max_discharge_w, max(0, int(max_discharge_w))),
        )

    def holding(self, why: str) -> BatteryEnvelope:
        """This envelope with the battery held still, for ``why``."""
        return replace(self, max_charge_w=0, max_discharge_w=0, held=why)

    def clamp(
        self, *, requested_w: int, soc_pct: float, previous_w: int, dt_s: float
    ) -> tuple[int, tuple[str, ...]]:
        """The nearest safe setpoint to ``requested_w`` (+ charge) and the limits that applied.

        The ramp limit is applied first and the hard limits last, so a ramp can never carry a
        setpoint past the SoC window or the power limits.
        """
        hits: list[str] = []
        step = int(min(self.ramp_w_per_s * (dt_s if dt_s > 0 else 0.0), _UNBOUNDED_STEP_W))
        w = min(max(requested_w, previous_w - step), previous_w + step)
        if w != requested_w:
            hits.append("ramp")
        return int(self.limit(w, soc_pct=soc_pct, hits=hits)), tuple(hits)

    def limit(self, w: float, *, soc_pct: float, hits: list[str]) -> float:
        """``w`` (+ charge) inside the power limits and the SoC window, each limit that applied
        appended to ``hits``: the battery's rule wherever its cells are driven from (inverter or
        DC-DC converter)."""
        if not 0 <= soc_pct <= 100:  # NaN included: a state of charge nobody can know
            if w:
                hits.append("soc-unknown")
            return 0
        if w > self.max_charge_w:
            w = self.max_charge_w
            hits.append("max-charge")
        if w < -self.max_discharge_w:
            w = -self.max_discharge_w
            hits.append("max-discharge")
        if w > 0 and soc_pct >= self.soc_max_pct:
            w = 0
            hits.append("soc-max")
        if w < 0 and soc_pct <= self.soc_min_pct:
            w = 0
            hits.append("soc-min")
        return w

    def beside(self, port_w: int) -> BatteryEnvelope:
        """What is left to the battery inverter while the DC-DC converter's port moves ``port_w``
        (+ charge) through the same cells: the cells' power limit is shared by both paths, and
        neither path may exceed it on its own."""
        return replace(
            self, max_charge_w=max(0, min(self.max_charge_w, self.max_charge_w - port_w)),
            max_discharge_w=max(0, min(self.max_discharge_w, self.max_discharge_w + port_w)),
        )

    def contains(self, *, w: int, soc_pct: float) -> bool:
        """Whether a setpoint is inside the static part of the envelope (for tests and audits)."""
        if w and not 0 <= soc_pct <= 100:
            return False
        if w > 0 and soc_pct >= self.soc_max_pct:
            return False
        if w < 0 and soc_pct <= self.soc_min_pct:
            return False
        return -self.max_discharge_w <= w <= self.max_charge_w


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


@dataclass(frozen=True, slots=True)
class ConverterEnvelope:
    """The DC-DC converter's part of the envelope: its current and the DC bus's voltage window.

    The current limit is at the bus side (64200 ``DCA``). The bus window is where trading on the
    bus is allowed at all: outside it, or after any trip, every converter waits.
    """

    max_current_a: float
    bus_v_min: float
    bus_v_max: float

    def __post_init__(self) -> None:
        if self.max_current_a <= 0:
            raise ValueError(f"converter current limit must be > 0 A, got {self.max_current_a}")
        if not 0 < self.bus_v_min < self.bus_v_max:
            raise ValueError(
                f"bus window must satisfy 0 < min < max, got [{self.bus_v_min}, {self.bus_v_max}]"
            )

    def within_device(
        self, *, current_limit_a: float, v_min: float, v_max: float
    ) -> ConverterEnvelope:
        """Narrowed by the converter's own ``AMax`` and protection window: the stricter wins.

        Raises ``ValueError`` when nothing is left (a device reporting no current, or a window
        that does not overlap ours): such a converter must not run at all.
        """
        return ConverterEnvelope(
            max_current_a=min(self.max_current_a, current_limit_a),
            bus_v_min=max(self.bus_v_min, v_min),
            bus_v_max=min(self.bus_v_max, v_max),
        )

    def bus_inside(self, volts: float) -> bool:
        return self.bus_v_min <= volts <= self.bus_v_max

    def clamp(
        self, *, requested_a: float, bus_v: float, soc_pct: float, battery: BatteryEnvelope
    ) -> tuple[float, tuple[str, ...]]:
        """The nearest safe converter current to ``requested_a`` (+ = from the bus into the
        battery) and the limits that applied: the current limit, the battery's power limits and
        its SoC window (the converter's port is the battery's DC side)."""
        hits: list[str] = []
        a = requested_a
        if abs(a) > self.max_current_a:
            a = self.max_current_a if a > 0 else -self.max_current_a
            hits.append("max-current")
        volts = max(bus_v, 1.0)
        w = a * volts
        limited = battery.limit(w, soc_pct=soc_pct, hits=hits)
        if limited != w:
            a = limited / volts
        return a, tuple(hits)

    def contains(self, *, amps: float) -> bool:
        return abs(amps) <= self.max_current_a
