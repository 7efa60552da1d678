"""The grid operator's limits at the home's connection point, per step of the plan.

An export limit (zero export included) and an import limit are the operator's, written into
the connection agreement; they bound what the meter sees, whatever the inverter could give. A
dimming window is Germany's §14a EnWG: while the operator dims, the home's controllable
consumers (heat pump, wallbox, a battery charging from the grid) may together draw no more than
``dimmed_w`` from the grid; the household's own load is never dimmed. Known windows come from
the config; a live signal from the operator's control box is the same cap over the steps it
names.

A step that overlaps a dimming window only in part is capped as a whole: the plan does not know
when within the step the energy flows.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.flex_plan import parse_hhmm, slot_wh
from gateway.plan.problem import GridCaps

_DAY_MIN = 1440
_WINDOW = r"^([01]\d|2[0-3]):[0-5]\d-(([01]\d|2[0-3]):[0-5]\d|24:00)$"


@dataclass(frozen=True, slots=True, kw_only=True)
class GridLimits:
    """Limits in W (None: none). ``dimming`` holds windows as minutes of the local day
    ``(from, to)``, a ``to`` before ``from`` running past midnight."""

    export_w: int | None = None
    import_w: int | None = None
    dimmed_w: int | None = None
    dimming: tuple[tuple[int, int], ...] = ()
    zone: ZoneInfo = ZoneInfo("UTC")

    def caps(self, *, start_ms: int, step_s: float, steps: int) -> GridCaps:
        """The limits as Wh per step (rounded down) from ``start_ms`` (epoch ms)."""
        limit = step_wh(self.import_w, step_s)
        export = step_wh(self.export_w, step_s)
        dimmed = step_wh(self.dimmed_w, step_s)
        return GridCaps(
            import_wh=(limit,) * steps, export_wh=(export,) * steps,
            dimmed_wh=tuple(dimmed if dimmed is not None and self._dimmed(
                start_ms + round(k * step_s * 1000), step_s) else None for k in range(steps)))

    def _dimmed(self, start_ms: int, step_s: float) -> bool:
        """Whether ``[start, start + step)`` meets a dimming window (local time)."""
        local = datetime.fromtimestamp(start_ms / 1000, self.zone)
        first = local.hour * 60 + local.minute
        span = max(1, math.ceil(step_s / 60))
        return any(_meets(first, span, window) for window in self.dimming)


def step_wh(watts: int | None, step_s: float) -> int | None:
    return None if watts is None else slot_wh(watts, step_s)


def _meets(first: int, span: int, window: tuple[int, int]) -> bool:
    """Whether minutes ``[first, first + span)`` of the day (wrapping) meet ``window``."""
    start, end = window
    length = (end - start) % _DAY_MIN or _DAY_MIN
    return any((first + m - start) % _DAY_MIN < length for m in range(min(span, _DAY_MIN)))


class GridConfig(BaseModel):
    """``[grid]`` of the gateway config: the connection agreement's limits."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    export_limit_w: int | None = Field(default=None, ge=0, le=1_000_000)
    """0: zero export."""
    import_limit_w: int | None = Field(default=None, ge=0, le=1_000_000)
    dimmed_import_w: int | None = Field(default=None, ge=0, le=1_000_000)
    """What the controllable consumers may draw together while dimmed (§14a: 4200)."""
    dimming: tuple[str, ...] = Field(default=(), max_length=24)
    """Known dimming windows, local time: ``["17:00-20:00"]``."""
    timezone: str = "UTC"

    @field_validator("dimming")
    @classmethod
    def _windows(cls, windows: tuple[str, ...]) -> tuple[str, ...]:
        for window in windows:
            if not re.match(_WINDOW, window):
                raise ValueError(f"{window!r} is not a window like \"17:00-20:00\"")
            if window[:5] == window[6:]:
                raise ValueError(f"{window!r} starts and ends at the same time")
        return windows

    @field_validator("timezone")
    @classmethod
    def _zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown zone {zone!r} (e.g. \"Europe/Berlin\")") from None
        return zone

    @model_validator(mode="after")
    def _dimmed(self) -> GridConfig:
        if self.dimming and self.dimmed_import_w is None:
            raise ValueError("dimming windows need dimmed_import_w (the cap while dimmed)")
        return self

    def limits(self) -> GridLimits:
        return GridLimits(
            export_w=self.export_limit_w, import_w=self.import_limit_w,
            dimmed_w=self.dimmed_import_w, zone=ZoneInfo(self.timezone),
            dimming=tuple((parse_hhmm(w[:5]), parse_hhmm(w[6:])) for w in self.dimming))
