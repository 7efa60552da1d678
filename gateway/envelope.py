"""The safety envelope: the only way a setpoint reaches a device.

Whatever the market cleared, the battery is never asked to charge above its SoC window or power
limit, never asked to discharge below its reserve, and never ramped faster than the installer
allows. Clamping is explicit: every limit that bit is returned, so the dispatcher can log and count
why the physical setpoint differs from the cleared one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatteryEnvelope:
    soc_min_pct: float
    soc_max_pct: float
    max_charge_w: int
    max_discharge_w: int
    ramp_w_per_s: float

    def __post_init__(self) -> None:
        if not 0 <= self.soc_min_pct < self.soc_max_pct <= 100:
            raise ValueError(
                f"SoC window must satisfy 0 <= min < max <= 100, got "
                f"[{self.soc_min_pct}, {self.soc_max_pct}]"
            )
        if self.max_charge_w < 0 or self.max_discharge_w < 0 or self.ramp_w_per_s <= 0:
            raise ValueError("power limits must be >= 0 and the ramp rate > 0")

    def within_device(
        self, *, max_charge_w: float, max_discharge_w: float, soc_min_pct: float | None,
        soc_max_pct: float | None,
    ) -> BatteryEnvelope:
        """This envelope narrowed by what the device itself reports: the stricter limit wins."""
        lo = max(self.soc_min_pct, soc_min_pct if soc_min_pct is not None else 0.0)
        hi = min(self.soc_max_pct, soc_max_pct if soc_max_pct is not None else 100.0)
        return BatteryEnvelope(
            soc_min_pct=lo,
            soc_max_pct=max(hi, lo + 0.1),
            max_charge_w=min(self.max_charge_w, max(0, int(max_charge_w))),
            max_discharge_w=min(self.max_discharge_w, max(0, int(max_discharge_w))),
            ramp_w_per_s=self.ramp_w_per_s,
        )

    def clamp(
        self, *, requested_w: int, soc_pct: float, previous_w: int, dt_s: float
    ) -> tuple[int, tuple[str, ...]]:
        """The nearest safe setpoint to ``requested_w`` (+ charge) and the limits that applied.

        The ramp limit is applied first and the hard limits last, so a ramp can never carry a
        setpoint past the SoC window or the power limits.
        """
        hits: list[str] = []
        step = int(self.ramp_w_per_s * max(dt_s, 0.0))
        w = min(max(requested_w, previous_w - step), previous_w + step)
        if w != requested_w:
            hits.append("ramp")
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
        return w, tuple(hits)

    def contains(self, *, w: int, soc_pct: float) -> bool:
        """Whether a setpoint is inside the static part of the envelope (for tests and audits)."""
        if w > 0 and soc_pct >= self.soc_max_pct:
            return False
        if w < 0 and soc_pct <= self.soc_min_pct:
            return False
        return -self.max_discharge_w <= w <= self.max_charge_w
