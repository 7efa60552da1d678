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
  no faster than the power seen allows over the time between the two reads; a percentage of a
  capacity (units ``%WHRtg``: a state of charge) moves no faster than that power allows either;
  and the device's structure stays as it was: scale factors, static points, ratings (those
  above, and ``…Rtg`` of any unit: ``WHRtg``), and which measured quantities are implemented (a
  value turning into the "not implemented" sentinel, or a sentinel into a value).

A relative rule also fails when the device really changed (a meter replaced, a counter reset, a
rating reconfigured). Corruption is random and does not repeat itself, so the sample that broke
the rule is kept as a candidate and the next sample consistent with it confirms the change: one
failed poll, never a device stuck rejected.

What the rules cannot see: a corruption that keeps a value plausible (a state of charge off by
less than a poll's worth of charging, a power within the rating). A meter has no rating point,
so its instantaneous power is bounded only by its type; its counters are checked.

Sans-I/O: the caller reads the clock (``PlausibilityGuard`` takes it) and the registers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from gateway.devices.errors import BadDeviceData
from gateway.devices.model_reader import ModelData, Value
from protocols.sunspec.models import PointDef
from protocols.sunspec.points import SF_RANGE

MARGIN = 1.25
"""How far past its ratings a device may measure itself: meters and ratings are a few % apart,
a corrupted register is off by far more."""
TRANSIENT_W = 1000
"""Power that may come and go between two polls unseen (a kettle), on top of what both saw."""

_POWER_UNITS = frozenset({"W", "VA", "var", "Var"})
_ENERGY_UNITS = frozenset({"Wh", "WH"})
_COUNTER_TYPES = frozenset({"acc16", "acc32", "acc64", "uint64"})
"""Wh points of these types are lifetime counters (accumulators; 7xx models count in uint64)."""
_QUANTITY_UNITS = _POWER_UNITS | _ENERGY_UNITS | {"V", "A", "Hz"}
_SIGNED_TYPES = frozenset({"int16", "int32", "int64"})

Sample = Mapping[int, ModelData]
"""One poll: the models read, by id."""
_Key = tuple[int, str]


class ImplausibleReading(BadDeviceData):
    """The device answered, but with values no healthy device can hold (see the module doc)."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A sample and when its read began (None without a clock: no rate checks)."""

    sample: Sample
    started_s: float | None


def absolute_problems(sample: Sample) -> list[str]:
    """What in ``sample`` alone cannot be true, one line per point (empty: plausible)."""
    problems = []
    rating = _rating_w(sample)
    for model, point, raw, value in _points(sample):
        if raw is None:
            continue
        where = f"model {model.definition.id} {point.name}"
        if point.type == "sunssf" and raw not in SF_RANGE:
            problems.append(f"{where}: scale factor {raw} outside -10..10")
        elif point.type.startswith("enum") and point.symbols and raw not in point.symbols.values():
            problems.append(f"{where}: {raw} is none of its symbols")
        elif not isinstance(value, int | float):
            continue
        elif _is_percent(point):
            low = -100 if point.type in _SIGNED_TYPES else 0
            if not low <= value <= 100:
                problems.append(f"{where}: {value} % outside {low}..100 %")
        elif _is_power(point) and not _is_rating(point) and rating is not None:
            if abs(value) > MARGIN * rating:
                problems.append(f"{where}: {value} {point.units} beyond the rating {rating:g} W")
    return problems


def relative_problems(sample: Sample, *, before: Accepted, ended_s: float | None) -> list[str]:
    """What in ``sample`` contradicts the accepted sample ``before``; the read of ``sample``
    ended at ``ended_s`` (the device sampled at most ``ended_s - before.started_s`` apart)."""
    problems = _structure_changes(before.sample, sample)
    elapsed_s = None
    if ended_s is not None and before.started_s is not None:
        elapsed_s = max(0.0, ended_s - before.started_s)
    power_w = MARGIN * max(_powers_w(before.sample) + _powers_w(sample)) + TRANSIENT_W
    for model, point, _, value in _points(sample):
        old = _value(before.sample, model.definition.id, point.name)
        if point.type.startswith("acc"):  # SunSpec: an accumulator at 0 reads "not implemented"
            old, value = old or 0, value or 0
        if not isinstance(value, int | float) or not isinstance(old, int | float):
            continue
        where = f"model {model.definition.id} {point.name}"
        step = 2 * _resolution(model, point)  # both readings rounded by the device
        if _is_counter(point):
            if value < old:
                problems.append(f"{where}: counter went back from {old} to {value} Wh")
            elif elapsed_s is not None and value - old > power_w * elapsed_s / 3600 + step:
                problems.append(f"{where}: counter rose {value - old:g} Wh in {elapsed_s:.1f} s, "
                                f"more than {power_w:g} W can")
        elif elapsed_s is not None and (capacity := _capacity_wh(model, point)):
            most = 100 * power_w * elapsed_s / 3600 / capacity + step
            if abs(value - old) > most:
                problems.append(f"{where}: moved {abs(value - old):.2f} % in {elapsed_s:.1f} s, "
                                f"more than {power_w:g} W can in {capacity:g} Wh")
    return problems


class PlausibilityGuard:
    """One device's checker: keeps the last accepted sample and a candidate change.

    ``now_s`` is the clock the device's physics runs on (a simulated world's, in tests); None
    turns the rate checks off (counters are still checked for going back).
    """

    def __init__(self, *, now_s: Callable[[], float] | None = None) -> None:
        self._now_s = now_s
        self._accepted: Accepted | None = None
        self._candidate: Accepted | None = None

    def begin(self) -> float | None:
        """Call right before reading: the time the sample is at the earliest."""
        return None if self._now_s is None else self._now_s()

    def check(self, sample: Sample, *, started_s: float | None) -> None:
        """Accept ``sample`` (read from ``started_s`` on) or raise ``ImplausibleReading``."""
        problems = absolute_problems(sample)
        if problems:
            raise ImplausibleReading(_summary(problems))
        ended_s = self.begin()
        current = Accepted(sample, started_s)
        if self._accepted is not None:
            problems = relative_problems(sample, before=self._accepted, ended_s=ended_s)
            if problems and not (self._candidate is not None and not relative_problems(
                    sample, before=self._candidate, ended_s=ended_s)):
                self._candidate = current
                raise ImplausibleReading(_summary(problems))
        self._accepted, self._candidate = current, None


def _summary(problems: list[str]) -> str:
    more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
    return "implausible: " + "; ".join(problems[:3]) + more


def _points(sample: Sample) -> Iterator[tuple[ModelData, PointDef, Value, Value]]:
    for model in sample.values():
        for point in model.definition.points:
            yield model, point, model.unscaled.get(point.name), model.values.get(point.name)


def _value(sample: Sample, model_id: int, name: str) -> Value:
    model = sample.get(model_id)
    return None if model is None else model.values.get(name)


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
    return point.units in _ENERGY_UNITS and point.type in _COUNTER_TYPES


def _is_percent(point: PointDef) -> bool:
    units = point.units or ""
    return (units.startswith("%") or units.startswith("Pct")) and "/" not in units


def _rating_w(sample: Sample) -> float | None:
    ratings = [abs(value) for _, point, _, value in _points(sample)
               if _is_rating(point) and isinstance(value, int | float) and value]
    return max(ratings, default=None)


def _powers_w(sample: Sample) -> list[float]:
    """Every power the sample holds, ratings included: what a counter may have run at."""
    return [abs(value) for _, point, _, value in _points(sample)
            if _is_power(point) and isinstance(value, int | float)] or [0.0]


def _capacity_wh(model: ModelData, point: PointDef) -> float | None:
    """The energy a "%<point>" percentage is a share of (802 SoC is ``%WHRtg``), if it has one."""
    units = point.units or ""
    if not units.startswith("%") or "/" in units:
        return None
    try:
        reference = model.definition.point(units[1:].strip())
    except KeyError:
        return None
    capacity = model.values.get(reference.name)
    if reference.units not in _ENERGY_UNITS or not isinstance(capacity, int | float):
        return None
    return capacity if capacity > 0 else None


def _resolution(model: ModelData, point: PointDef) -> float:
    """One step of the point's register: 10**sf."""
    sf = model.unscaled.get(point.sf) if isinstance(point.sf, str) else point.sf
    return 10.0 ** sf if isinstance(sf, int) and sf in SF_RANGE else 1.0


def _structure(sample: Sample) -> dict[_Key, Value | bool]:
    """What a running device does not change: scale factors, static points, ratings and limits
    (their raw values), and which of its read-only measured quantities it implements (accumulators
    aside: theirs reads 0, which a new counter holds too; going back to it is a counter's rule)."""
    out: dict[_Key, Value | bool] = {}
    for model, point, raw, _ in _points(sample):
        key = (model.definition.id, point.name)
        if point.type == "sunssf" or point.static or _is_nameplate(point):
            out[key] = raw
        elif (not point.writable and not point.type.startswith("acc")
              and (point.units in _QUANTITY_UNITS or _is_percent(point))):
            out[key] = raw is not None
    return out


def _structure_changes(before: Sample, after: Sample) -> list[str]:
    old, new = _structure(before), _structure(after)
    changes = []
    for key in sorted(old.keys() & new.keys()):
        if old[key] != new[key]:
            a, b = (_shown(v) for v in (old[key], new[key]))
            changes.append(f"model {key[0]} {key[1]}: {a} → {b}")
    return changes


def _shown(value: Value | bool) -> str:
    if value is True:
        return "implemented"
    if value is False or value is None:
        return "not implemented"
    return str(value)
