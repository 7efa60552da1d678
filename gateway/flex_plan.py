"""Shift the home's controllable loads (EV charging, appliances) within the owner's limits.

A load that only has to be done *by* a time (the car by the owner's ready-by, the water heated by
evening) is the cheapest storage a home has: no battery losses, no wear. The plan runs it on the
home's own forecast surplus, which is worth the feed-in tariff instead of the retail one, and
otherwise defers it, which keeps it out of the evening peak, but never past its latest start:
the point where what is still owed, at the load's full power, only just fits in the whole
intervals left before the deadline (less a safety margin). Several loads get the surplus earliest
deadline first.

Pure: jobs (what each load owes, how fast it can take it, when it is due) in, energy per load out.
``must_run_wh`` is the latest-start rule alone: the controller applies it every control period
on live readings, so a plan made ahead on an estimate cannot make a load miss its deadline.

Slotted, with integer Wh: a load runs at most ``slot_wh`` (its maximum power over a slot,
rounded down) in any slot. The invariant that keeps a deadline is that what is owed after a slot
fits in the whole slots left before ``due − margin``; every plan keeps it when it held before.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

DAY_S = 86_400
_SLACK_S = 1e-6


@dataclass(frozen=True, slots=True)
class FlexJob:
    """One controllable load's owed energy, as of the start of the slot being planned.

    ``due_s`` is the time from that start until the energy must have been delivered.
    """

    name: str
    need_wh: int
    max_w: int
    due_s: float

    def __post_init__(self) -> None:
        if self.need_wh < 0 or self.max_w < 0:
            raise ValueError(f"flex job {self.name}: need_wh and max_w must be >= 0")
        if self.due_s < 0:
            raise ValueError(f"flex job {self.name}: due_s must be >= 0, got {self.due_s}")


def slot_wh(max_w: int, slot_s: float) -> int:
    """The most a load of ``max_w`` can take in ``slot_s`` (rounded down: never above max_w)."""
    return math.floor(max_w * slot_s / 3600)


def must_run_wh(job: FlexJob, *, slot_s: float, period_s: float, margin_s: float) -> int:
    """What ``job`` has to take in the next ``slot_s``, or the rest no longer fits before it is due.

    The rest fits in the whole periods of ``period_s`` between the end of this slot and
    ``due_s − margin_s``, at the load's full power. Capped by what the slot can take: a job that
    cannot be finished in time any more runs flat out.
    """
    if slot_s <= 0 or period_s <= 0 or margin_s < 0:
        raise ValueError("slot_s and period_s must be > 0 and margin_s >= 0")
    # A microsecond of slack: times of day computed two ways (from the interval's start, from
    # now plus the rest of it) must not land one whole period apart through float rounding. It is
    # added in seconds, before dividing: as a fraction of a period it grew with the period, and
    # a deadline a millisecond short of a boundary counted one whole period too many.
    later = max(0, math.floor((job.due_s - margin_s - slot_s + _SLACK_S) / period_s))
    owed_after = job.need_wh - later * slot_wh(job.max_w, period_s)
    return max(0, min(owed_after, job.need_wh, slot_wh(job.max_w, slot_s)))


def plan_flex(jobs: Iterable[FlexJob], *, slot_s: float, surplus_wh: int, period_s: float,
              margin_s: float) -> dict[str, int]:
    """Energy each job runs in the next ``slot_s``: what its deadline forces, plus the forecast
    surplus (``surplus_wh``, PV above the base load), handed out earliest deadline first.

    Never more than a job owes or its power allows in the slot.
    """
    left = max(0, surplus_wh)
    runs: dict[str, int] = {}
    for job in sorted(jobs, key=lambda j: (j.due_s, j.name)):
        if job.name in runs:
            raise ValueError(f"flex job {job.name!r} given twice")
        can = min(job.need_wh, slot_wh(job.max_w, slot_s))
        run = max(must_run_wh(job, slot_s=slot_s, period_s=period_s, margin_s=margin_s),
                  min(can, left))
        left = max(0, left - run)
        runs[job.name] = run
    return runs


def due_in_s(deadline_min: int, *, time_of_day_s: float) -> float:
    """Seconds from ``time_of_day_s`` to the next time the clock shows ``deadline_min``."""
    if not 0 <= deadline_min < 1440:
        raise ValueError(f"deadline must be a minute of the day 0..1439, got {deadline_min}")
    return (deadline_min * 60 - time_of_day_s) % DAY_S


def first_due_s(*deadlines_min: int | None, time_of_day_s: float) -> float | None:
    """Seconds from ``time_of_day_s`` to the first of ``deadlines_min`` that is set (minutes of
    the day: a load's own deadline, the owner's ready-by); None when none is."""
    return min((due_in_s(m, time_of_day_s=time_of_day_s) for m in deadlines_min if m is not None),
               default=None)


def parse_hhmm(text: str) -> int:
    """``"07:00"`` as a minute of the day (the owner's ready-by preference, validated upstream)."""
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def rest_limit_w(job: FlexJob, *, planned_wh: int, rest_s: float, interval_s: float,
                 margin_s: float) -> int:
    """The power limit for the rest of the running interval (``rest_s``; ``job.due_s`` from now).

    The energy is the plan's share of the rest (``planned_wh``), raised to what the deadline
    forces on this live reading, capped by what the job owes; spread evenly over the rest,
    rounded up, never above ``job.max_w``.
    """
    rest_s = max(1.0, rest_s)
    forced = must_run_wh(job, slot_s=rest_s, period_s=interval_s, margin_s=margin_s)
    energy = max(min(planned_wh, job.need_wh), forced)
    return min(job.max_w, math.ceil(max(0, energy) * 3600 / rest_s))


def load_job(name: str, *, need_wh: int, max_w: int, deadline_min: int | None,
             ready_by_min: int | None, time_of_day_s: float) -> FlexJob | None:
    """The job of one connected load as of ``time_of_day_s``; None when it owes nothing.

    Due at the load's own deadline or the owner's ready-by (``ready_by_min``, for an EV),
    whichever comes first. A load that owes energy but names no deadline is due at ready-by, or
    else in a day: it will not be deferred for longer than that.
    """
    if need_wh <= 0 or max_w <= 0:
        return None
    due = first_due_s(deadline_min, ready_by_min, time_of_day_s=time_of_day_s)
    return FlexJob(name=name, need_wh=need_wh, max_w=max_w, due_s=DAY_S if due is None else due)
