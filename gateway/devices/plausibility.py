"""Plausibility of what a device says: a reading that cannot be true is a failed poll, not data.

Modbus TCP carries no checksum, so a reply corrupted by the device or a serial-to-TCP converter
decodes as well as a good one (over RTU the CRC catches it). The rules below catch what no
healthy device can say, and they come from the SunSpec model definitions (point types, units,
symbols, the ``static`` flag), not from a list of registers, so a new model or driver gets them
for free:

* **Absolute**, on one sample: scale factors within -10..10; an enumeration holds one of its
  symbols; a percentage (units ``%…`` or ``Pct``, rates per second excepted) within 0..100
  (−100..100 when signed); a power (W, VA, var) within the device's own ratings (the power points
  SunSpec names ``…Max…`` or ``…Rtg``: ``WMaxRtg``, ``WChaMax``, ``WDisChaRteMax``, 64220
  ``WMax``) times ``MARGIN``.
* **Relative**, against the last accepted sample: an energy counter never goes back, and rises
  no faster than the power seen allows over the time between the two reads (plus the time a
  device may take to refresh its registers); a percentage of a capacity (units ``%WHRtg``: a
  state of charge) moves no faster than that power allows either;
  and the device's structure stays as it was: scale factors, static points, ratings (those
  above, and ``…Rtg`` of any unit: ``WHRtg``), and which measured quantities are implemented (a
  value turning into the "not implemented" sentinel, or a sentinel into a value).

A relative rule also fails when the device really changed (a meter replaced, a counter reset, a
rating reconfigured). Corruption is random and does not repeat itself, so the sample that broke
the rule is kept as a candidate and the next sample consistent with it confirms the change: one
failed poll, never a device stuck rejected.

Scale factors: SunSpec marks some ``static`` (the 7xx models': never change while the device
runs, so a change is a structure change as above) and lets a device change the others at run time
(the 1xx, 2xx, 124 and 802 models: an inverter rescales its power to keep precision). Such a
scale factor is read with its values in one request each poll (``model_reader.plan_reads``), and
a change is taken at once when every value it scales stays within a factor of ten of the last
(a rescale keeps the quantity; a corrupted scale factor moves it by a power of ten), else once
confirmed, as above.

**What is used**: a driver names the points it reads (``Uses``); only those, their scale factors
and the capacity a percentage of theirs refers to can refuse a sample. A device may hold values
in points nobody reads that its own version of a model allows and ours does not (an enumeration
value from a draft of the standard): each is logged once, never a failed poll.

What the rules cannot see: a corruption that keeps a value plausible (a state of charge off by
less than a poll's worth of charging, a power within the rating). A meter has no rating point,
so its instantaneous power is bounded only by its type; its counters are checked.

Sans-I/O: the caller reads the clock (``PlausibilityGuard`` takes it) and the registers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass

from gateway.devices.errors import BadDeviceData
from gateway.devices.model_reader import ModelData, Value
from protocols.sunspec.models import PointDef
from protocols.sunspec.points import SF_RANGE

_log = logging.getLogger(__name__)

MARGIN = 1.25
"""How far past its ratings a device may measure itself: meters and ratings are a few % apart,
a corrupted register is off by far more."""
TRANSIENT_W = 1000
"""Power that may come and go between two polls unseen (a kettle), on top of what both saw."""
REFRESH_S = 5.0
"""How old a device's registers may be when read: a device refreshes them from its measurement
every second or few (inverters and batteries up to every 5 s), not continuously, so two samples
read ``t`` apart may hold the device's state up to ``t + REFRESH_S`` apart. Without it, a re-read
soon after a poll is refused for a whole refresh's worth of charge."""
RESCALE = 10
"""A run-time scale factor change is a rescale when each value it scales moves less than this
factor (a corrupted scale factor moves it by a power of ten at least)."""

_POWER_UNITS = frozenset({"W", "VA", "var", "Var"})
_ENERGY_UNITS = frozenset({"Wh", "WH"})
_COUNTER_TYPES = frozenset({"acc16", "acc32", "acc64", "uint64"})
"""Wh points of these types are lifetime counters (accumulators; 7xx models count in uint64)."""
_FLOAT_TYPES = frozenset({"float32", "float64"})
"""Read-only Wh points of these types are lifetime counters too (the float meters' ``Tot…``,
the float inverters' ``WH``)."""
_QUANTITY_UNITS = _POWER_UNITS | _ENERGY_UNITS | {"V", "A", "Hz"}
_SIGNED_TYPES = frozenset({"int16", "int32", "int64"})

Sample = Mapping[int, ModelData]
"""One poll: the models read, by id."""
Uses = Mapping[int, Collection[str]]
"""The points a driver reads, by model id (see the module doc)."""
_Key = tuple[int, str]


class ImplausibleReading(BadDeviceData):
    """The device answered, but with values no healthy device can hold (see the module doc)."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A sample and when its read began (None without a clock: no rate checks)."""

    sample: Sample
    started_s: float | None


def absolute_problems(sample: Sample, *, uses: Uses | None = None) -> list[str]:
    """What in ``sample`` alone cannot be true, one line per point (empty: plausible); only the
    points ``uses`` names (and what they depend on) when given."""
    used = used_points(sample, uses)
    return [line for key, line in _absolute(sample, used) if used is None or key in used]


def relative_problems(sample: Sample, *, before: Accepted, ended_s: float | None,
                      uses: Uses | None = None) -> list[str]:
    """What in ``sample`` contradicts the accepted sample ``before``; the read of ``sample``
    ended at ``ended_s`` (the device sampled at most ``ended_s - before.started_s`` apart)."""
    return _relative(sample, before, ended_s, used_points(sample, uses))


def _relative(sample: Sample, before: Accepted, ended_s: float | None,
              used: frozenset[_Key] | None) -> list[str]:
    problems = _structure_changes(before.sample, sample, used)
    elapsed_s = None
    if ended_s is not None and before.started_s is not None:
        elapsed_s = max(0.0, ended_s - before.started_s)
    power_w = MARGIN * max(_powers_w(before.sample, used) + _powers_w(sample, used)) + TRANSIENT_W
    for model, point, raw, value in _points(sample, used):
        mid = model.definition.id
        old = _value(before.sample, mid, point.name)
        if point.type.startswith("acc"):  # SunSpec: an accumulator at 0 reads "not implemented"
            old = 0 if _raw(before.sample, mid, point.name) is None else old
            value = 0 if raw is None else value
        if not isinstance(value, int | float) or not isinstance(old, int | float):
            continue
        where = f"model {model.definition.id} {point.name}"
        step = 2 * _resolution(model, point, max(abs(old), abs(value)))  # both rounded
        if _is_counter(point):
            if value < old:
                problems.append(f"{where}: counter went back from {old} to {value} Wh")
            elif elapsed_s is not None and (
                    value - old > power_w * (elapsed_s + REFRESH_S) / 3600 + step):
                problems.append(f"{where}: counter rose {value - old:g} Wh in {elapsed_s:.1f} s "
                                f"(+{REFRESH_S:g} s refresh), more than {power_w:g} W can")
        elif elapsed_s is not None and (capacity := _capacity_wh(model, point)):
            most = 100 * power_w * (elapsed_s + REFRESH_S) / 3600 / capacity + step
            if abs(value - old) > most:
                problems.append(f"{where}: moved {abs(value - old):.2f} % in {elapsed_s:.1f} s "
                                f"(+{REFRESH_S:g} s refresh), more than {power_w:g} W can in "
                                f"{capacity:g} Wh")
    return problems


class PlausibilityGuard:
    """One device's checker: keeps the last accepted sample and a candidate change.

    ``now_s`` is the clock the device's physics runs on (a simulated world's, in tests); None
    turns the rate checks off (counters are still checked for going back). ``uses``: the points
    the driver reads (None: every point can refuse a sample); ``label`` names the device in the
    log line about a point outside them.
    """

    def __init__(self, *, now_s: Callable[[], float] | None = None, uses: Uses | None = None,
                 label: str = "device") -> None:
        self._now_s = now_s
        self._uses = uses
        self._label = label
        self._noted: set[_Key] = set()
        self._used: dict[tuple[int, ...], frozenset[_Key] | None] = {}
        """``used_points`` per set of models read (the definitions of a device's models stay)."""
        self._accepted: Accepted | None = None
        self._candidate: Accepted | None = None

    def begin(self) -> float | None:
        """Call right before reading: the time the sample is at the earliest."""
        return None if self._now_s is None else self._now_s()

    def check(self, sample: Sample, *, started_s: float | None) -> None:
        """Accept ``sample`` (read from ``started_s`` on) or raise ``ImplausibleReading``."""
        models = tuple(sample)
        if models not in self._used:
            self._used[models] = used_points(sample, self._uses)
        used = self._used[models]
        problems = []
        for key, line in _absolute(sample, used):
            if used is None or key in used:
                problems.append(line)
            elif key not in self._noted:
                self._noted.add(key)
                _log.warning("%s: %s (a point the driver does not read: ignored)",
                             self._label, line)
        if problems:
            raise ImplausibleReading(_summary(problems))
        ended_s = self.begin()
        current = Accepted(sample, started_s)
        if self._accepted is not None:
            problems = _relative(sample, self._accepted, ended_s, used)
            if problems and not (self._candidate is not None and not _relative(
                    sample, self._candidate, ended_s, used)):
                self._candidate = current
                raise ImplausibleReading(_summary(problems))
        self._accepted, self._candidate = current, None


def used_points(sample: Sample, uses: Uses | None) -> frozenset[_Key] | None:
    """The points of ``sample`` the checks may refuse it for: those ``uses`` names, their scale
    factors and the capacity their percentages refer to (None: every point)."""
    if uses is None:
        return None
    keys: set[_Key] = set()
    for model_id, names in uses.items():
        model = sample.get(model_id)
        if model is None:
            continue
        for name in names:
            point = model.definition.point(name)
            keys.add((model_id, name))
            if isinstance(point.sf, str):
                keys.add((model_id, point.sf))
            if (reference := _capacity_point(model, point)) is not None:
                keys.add((model_id, reference.name))
    return frozenset(keys)


def _absolute(sample: Sample, used: frozenset[_Key] | None) -> Iterator[tuple[_Key, str]]:
    """Every point's absolute problem; powers bounded by the used ratings."""
    rating = _rating_w(sample, used)
    for model, point, raw, value in _points(sample, None):
        if raw is None:
            continue
        key = (model.definition.id, point.name)
        where = f"model {key[0]} {point.name}"
        if point.type == "sunssf" and raw not in SF_RANGE:
            yield key, f"{where}: scale factor {raw} outside -10..10"
        elif point.type.startswith("enum") and point.symbols and raw not in point.symbols.values():
            yield key, f"{where}: {raw} is none of its symbols"
        elif not isinstance(value, int | float):
            continue
        elif _is_percent(point):
            low = -100 if point.type in _SIGNED_TYPES else 0
            if not low <= value <= 100:
                yield key, f"{where}: {value} % outside {low}..100 %"
        elif _is_power(point) and not _is_rating(point) and rating is not None:
            if abs(value) > MARGIN * rating:
                yield key, f"{where}: {value} {point.units} beyond the rating {rating:g} W"


def _summary(problems: list[str]) -> str:
    more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
    return "implausible: " + "; ".join(problems[:3]) + more


def _points(sample: Sample, used: frozenset[_Key] | None
            ) -> Iterator[tuple[ModelData, PointDef, Value, Value]]:
    for model in sample.values():
        mid = model.definition.id
        for point in model.definition.points:
            if used is None or (mid, point.name) in used:
                yield model, point, model.unscaled.get(point.name), model.values.get(point.name)


def _value(sample: Sample, model_id: int, name: str) -> Value:
    model = sample.get(model_id)
    return None if model is None else model.values.get(name)


def _raw(sample: Sample, model_id: int, name: str) -> Value:
    model = sample.get(model_id)
    return None if model is None else model.unscaled.get(name)


def _is_power(point: PointDef) -> bool:
    return point.units in _POWER_UNITS


def _is_rating(point: PointDef) -> bool:
    """A power rating or limit: SunSpec names them ``…Max…`` or ``…Rtg`` (WMaxRtg, WChaMax,
    WDisChaRteMax). Not the limits a gateway writes (``WMaxLimPct``, 64200 ``AMax``)."""
    return _is_power(point) and ("Max" in point.name or point.name.endswith("Rtg"))


def _is_nameplate(point: PointDef) -> bool:
    """A power rating or limit, or a rating of any quantity (802 ``WHRtg``, ``AHRtg``)."""
    return _is_rating(point) or point.name.endswith("Rtg")


def _is_counter(point: PointDef) -> bool:
    if point.units not in _ENERGY_UNITS:
        return False
    return point.type in _COUNTER_TYPES or (
        point.type in _FLOAT_TYPES and not point.writable and not _is_nameplate(point))


def _is_percent(point: PointDef) -> bool:
    units = point.units or ""
    return (units.startswith("%") or units.startswith("Pct")) and "/" not in units


def _rating_w(sample: Sample, used: frozenset[_Key] | None) -> float | None:
    ratings = [abs(value) for _, point, _, value in _points(sample, used)
               if _is_rating(point) and isinstance(value, int | float) and value]
    return max(ratings, default=None)


def _powers_w(sample: Sample, used: frozenset[_Key] | None) -> list[float]:
    """Every power the sample holds, ratings included: what a counter may have run at."""
    return [abs(value) for _, point, _, value in _points(sample, used)
            if _is_power(point) and isinstance(value, int | float)] or [0.0]


def _capacity_point(model: ModelData, point: PointDef) -> PointDef | None:
    """The energy point a "%<point>" percentage is a share of (802 SoC is ``%WHRtg``)."""
    units = point.units or ""
    if not units.startswith("%") or "/" in units:
        return None
    try:
        reference = model.definition.point(units[1:].strip())
    except KeyError:
        return None
    return reference if reference.units in _ENERGY_UNITS else None


def _capacity_wh(model: ModelData, point: PointDef) -> float | None:
    """The energy a percentage point is a share of, if it has one and the device says it."""
    reference = _capacity_point(model, point)
    capacity = None if reference is None else model.values.get(reference.name)
    if not isinstance(capacity, int | float):
        return None
    return capacity if capacity > 0 else None


def _resolution(model: ModelData, point: PointDef, magnitude: float) -> float:
    """One step of the point's register at ``magnitude``: 10**sf, or a float's spacing there."""
    if point.type in _FLOAT_TYPES:
        mantissa = 24 if point.type == "float32" else 53
        return 2.0 ** (math.frexp(magnitude)[1] - mantissa) if magnitude else 0.0
    sf = model.unscaled.get(point.sf) if isinstance(point.sf, str) else point.sf
    return 10.0 ** sf if isinstance(sf, int) and sf in SF_RANGE else 1.0


def _structure(sample: Sample, used: frozenset[_Key] | None) -> dict[_Key, Value | bool]:
    """What a running device does not change: static scale factors, static points, ratings and
    limits (their raw values), and which of its read-only measured quantities it implements
    (accumulators aside: theirs reads 0, which a new counter holds too; going back to it is a
    counter's rule). Run-time scale factors are ``_rescales``' business."""
    out: dict[_Key, Value | bool] = {}
    for model, point, raw, _ in _points(sample, used):
        key = (model.definition.id, point.name)
        if point.type == "sunssf":
            if point.static:
                out[key] = raw
        elif point.static or _is_nameplate(point):
            out[key] = raw
        elif (not point.writable and not point.type.startswith("acc")
              and (point.units in _QUANTITY_UNITS or _is_percent(point))):
            out[key] = raw is not None
    return out


def _structure_changes(before: Sample, after: Sample, used: frozenset[_Key] | None) -> list[str]:
    old, new = _structure(before, used), _structure(after, used)
    changes = []
    for key in sorted(old.keys() & new.keys()):
        if old[key] != new[key]:
            a, b = (_shown(v) for v in (old[key], new[key]))
            changes.append(f"model {key[0]} {key[1]}: {a} → {b}")
    return changes + _rescales(before, after, used)


def _rescales(before: Sample, after: Sample, used: frozenset[_Key] | None) -> list[str]:
    """Run-time scale factors that changed and moved a value they scale by ``RESCALE`` or more."""
    problems = []
    for model, point, raw, _ in _points(after, used):
        if point.type != "sunssf" or point.static:
            continue
        mid = model.definition.id
        earlier = before.get(mid)
        old_sf = None if earlier is None else earlier.unscaled.get(point.name)
        if old_sf == raw or earlier is None:
            continue
        for scaled in model.definition.points:
            if scaled.sf != point.name or (used is not None and (mid, scaled.name) not in used):
                continue
            a, b = earlier.values.get(scaled.name), model.values.get(scaled.name)
            if isinstance(a, int | float) and isinstance(b, int | float) and not (
                    a == b or (a * b > 0 and 1 / RESCALE < b / a < RESCALE)):
                problems.append(f"model {mid} {point.name}: {_shown(old_sf)} → {_shown(raw)} "
                                f"({scaled.name} {a:g} → {b:g})")
                break
    return problems


def _shown(value: Value | bool) -> str:
    if value is True:
        return "implemented"
    if value is False or value is None:
        return "not implemented"
    return str(value)
