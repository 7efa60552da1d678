"""The past a simulated home's gateway remembers: its forecast, learned over the days before.

A gateway in the field has been running for weeks: its forecaster (``gateway/forecast.py``) has
seen the home's sun and load at every time of day, and the plan looks ahead over the day with it.
A simulated community that starts every gateway with an empty profile shows only a gateway's
first day, which plans interval by interval on persistence (the last reading carried forward):
in the afternoon it forecasts the sun of a quarter hour ago, offers a surplus the sun no longer
gives, and the battery makes up the difference. So a run starts each gateway with the profile
it would have learned from ``days`` past days of its home: the same household and roof, other
weather (the clouds and the load's noise of days drawn from their own seed), observed at the
gateway's control period and smoothed exactly as the gateway smooths them.
"""

from __future__ import annotations

import dataclasses
import zlib

from gateway.forecast import DAY_S, HomeForecaster
from sim_devices.home import HomeProfiles, HomeSpec

HISTORY_DAYS = 7
"""Days of history a run's gateways start with (0: a first day, nothing learned)."""
OBSERVED_EVERY_S = 120.0
"""Seconds of simulated time between two observations: the gateway's control period."""


def learned_forecast(spec: HomeSpec, *, world_seed: int,
                     days: int = HISTORY_DAYS) -> HomeForecaster:
    """The forecaster of ``spec``'s gateway after ``days`` past days (empty for 0).

    The past days' weather comes from the world seed and the home's name (or its own seed), so two
    runs of one scenario start from the same profile, and no past day repeats the day simulated.
    """
    if days < 0:
        raise ValueError(f"days must be >= 0, got {days}")
    forecaster = HomeForecaster()
    own = spec.seed if spec.seed is not None else world_seed
    past_seed = zlib.crc32(f"{own}/{spec.name}/past".encode())
    past = HomeProfiles(dataclasses.replace(spec, seed=past_seed), world_seed=past_seed)
    steps = int(DAY_S // OBSERVED_EVERY_S)
    for day in range(days):
        for step in range(steps):
            t_s = day * DAY_S + step * OBSERVED_EVERY_S
            t_ms = round(t_s * 1000)
            forecaster.observe(time_of_day_s=t_s % DAY_S, pv_w=past.pv_available_w(spec, t_ms),
                               load_w=past.base_load_w(spec, t_ms))
    return forecaster
