"""Time-of-day forecast of a home's PV and load with exponential smoothing.

A home's day repeats: PV follows the sun, load follows the household. Keeping one smoothed value per
time-of-day slot learns both from the home's own meter without any outside service, and the
profile survives restarts through ``to_json``/``from_json`` (the gateway writes it to its state
folder). Until a slot has been seen, the forecast falls back to the most recent observation
(persistence), which is the best guess a cold start has.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

DAY_S = 86_400


@dataclass(slots=True)
class Profile:
    """One smoothed series, e.g. PV power in W, by time-of-day slot."""

    slots: int = 96
    alpha: float = 0.3
    values: list[float | None] = field(default_factory=list)
    last: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.slots <= 1440:
            raise ValueError(f"slots must be 1..1440, got {self.slots}")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if not self.values:
            self.values = [None] * self.slots
        if len(self.values) != self.slots:
            raise ValueError(f"profile has {len(self.values)} values for {self.slots} slots")
        if not all(v is None or _power(v) for v in (*self.values, self.last)):
            raise ValueError("profile values must be finite, non-negative watts or null")

    def _slot(self, time_of_day_s: float) -> int:
        return int((time_of_day_s % DAY_S) * self.slots // DAY_S)

    def observe(self, time_of_day_s: float, value: float) -> None:
        i = self._slot(time_of_day_s)
        old = self.values[i]
        self.values[i] = value if old is None else old + self.alpha * (value - old)
        self.last = value

    def learned(self, time_of_day_s: float) -> bool:
        """Whether this time of day's slot has been observed (its forecast is not a fallback)."""
        return self.values[self._slot(time_of_day_s)] is not None

    def predict(self, time_of_day_s: float) -> float:
        v = self.values[self._slot(time_of_day_s)]
        if v is not None:
            return v
        return self.last if self.last is not None else 0.0


def _power(value: object) -> bool:
    """A watt figure a profile may hold: what ``observe`` stores (its inputs clamped at 0). A
    saved file holding anything else (NaN, a string, -1) is not one this code wrote."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


@dataclass(slots=True)
class HomeForecaster:
    """PV and load profiles of one home; forecasts energy (Wh) for an interval."""

    pv: Profile = field(default_factory=Profile)
    load: Profile = field(default_factory=Profile)

    def observe(self, *, time_of_day_s: float, pv_w: float | None, load_w: float) -> None:
        """Learn one reading; ``pv_w`` None: the PV's output says nothing about the sun now
        (curtailed), so its profile keeps what it knew."""
        if pv_w is not None:
            self.pv.observe(time_of_day_s, max(0.0, pv_w))
        self.load.observe(time_of_day_s, max(0.0, load_w))

    def forecast_wh(self, *, start_s: float, length_s: float) -> tuple[int, int]:
        """(pv_wh, load_wh) expected over [start_s, start_s + length_s), by time of day."""
        mid = start_s + length_s / 2
        hours = length_s / 3600
        return round(self.pv.predict(mid) * hours), round(self.load.predict(mid) * hours)

    def learned_ahead(
        self, *, start_s: float, block_s: float, count: int
    ) -> tuple[tuple[int, int], ...]:
        """(pv_wh, load_wh) of up to ``count`` consecutive blocks of ``block_s`` from ``start_s``.

        Stops before the first block whose time of day has not been learned yet: the look-ahead
        plans on what this home has seen, never on the persistence fallback, which would carry
        midday's surplus into a night it knows nothing about.
        """
        blocks = []
        for i in range(count):
            start = start_s + i * block_s
            mid = start + block_s / 2
            if not (self.pv.learned(mid) and self.load.learned(mid)):
                break
            blocks.append(self.forecast_wh(start_s=start, length_s=block_s))
        return tuple(blocks)

    def to_json(self) -> str:
        return json.dumps(
            {name: {"slots": p.slots, "alpha": p.alpha, "values": p.values, "last": p.last}
             for name, p in (("pv", self.pv), ("load", self.load))}
        )

    @classmethod
    def from_json(cls, text: str) -> HomeForecaster:
        """Load a saved profile; a corrupt file raises ValueError naming the problem."""
        try:
            raw = json.loads(text)
            return cls(pv=Profile(**raw["pv"]), load=Profile(**raw["load"]))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"forecast state is not a saved profile: {exc}") from exc
