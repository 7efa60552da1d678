"""Dispatch: turn the agreed interval into a battery setpoint, closing the loop on the meter.

The market agreed on energy at the meter, not on battery power, so the controller steers the
battery to make the *meter* follow the plan: ``battery = meter target − home net``, where the home
net (load − PV) is measured as ``meter − battery`` (the meter sees the home and the battery).
Forecast errors are absorbed by the battery, and an integral term spreads the energy error so far
over what is left of the interval, so delivered energy tracks cleared energy.

When anything is uncertain (stale meter or battery, no agreement, broker unreachable) the target
becomes zero at the meter: plain self-consumption, the safe mode every home can run alone.
The grid operator's limits bound the meter's target in every mode (``meter_floor_w``: the export
limit, ``meter_ceiling_w``: the import limit): the battery is never steered to export or import
past them. Whatever comes out goes through the safety envelope last.

Pure: readings and the plan in, a decision out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.envelope import BatteryEnvelope

Mode = Literal["market", "safe"]


@dataclass(frozen=True, slots=True)
class IntervalTarget:
    """What the meter should see over one interval: ``meter_wh`` (+ import) in ``length_s``."""

    meter_wh: int
    length_s: float


@dataclass(frozen=True, slots=True)
class Decision:
    mode: Mode
    setpoint_w: int
    requested_w: int
    limits: tuple[str, ...]
    reason: str


def decide(
    *,
    target: IntervalTarget | None,
    elapsed_s: float,
    metered_wh: float,
    meter_w: int,
    battery_w: int,
    soc_pct: float,
    previous_w: int,
    dt_s: float,
    envelope: BatteryEnvelope,
    safe_reason: str = "",
    meter_floor_w: float | None = None,
    meter_ceiling_w: float | None = None,
) -> Decision:
    """One control step.

    ``target`` None means safe mode (``safe_reason`` says why). ``metered_wh`` is the meter's net
    energy (+ import) since the interval started; ``meter_w`` and ``battery_w`` (+ charge) are the
    latest fresh readings.
    """
    home_net_w = meter_w - battery_w
    if target is None:
        mode: Mode = "safe"
        meter_target_w = 0.0
        reason = safe_reason or "no agreement"
    else:
        mode = "market"
        reason = "tracking cleared energy"
        remaining_s = max(target.length_s - elapsed_s, dt_s, 1e-3)
        expected_so_far = target.meter_wh * min(elapsed_s / target.length_s, 1.0)
        error_wh = expected_so_far - metered_wh
        base_w = target.meter_wh * 3600 / target.length_s
        meter_target_w = base_w + error_wh * 3600 / remaining_s
    if meter_floor_w is not None:
        meter_target_w = max(meter_target_w, meter_floor_w)
    if meter_ceiling_w is not None:
        meter_target_w = min(meter_target_w, meter_ceiling_w)
    requested = round(meter_target_w - home_net_w)
    setpoint, limits = envelope.clamp(
        requested_w=requested, soc_pct=soc_pct, previous_w=previous_w, dt_s=dt_s
    )
    return Decision(
        mode=mode, setpoint_w=setpoint, requested_w=requested, limits=limits, reason=reason
    )
