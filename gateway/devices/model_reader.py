"""Read whole SunSpec models in as few Modbus requests as the protocol allows, and decode them.

A poll is dominated by request round trips (on RS-485 at 19200 baud each one costs a turnaround
of several milliseconds plus framing), so the reader coalesces models that sit next to each other
in the map into one span and cuts that span into reads of at most 125 registers. Cuts fall on point
boundaries, so no 32- or 64-bit value is ever split across two reads (some devices refuse that, and
a value would tear if it changed between the reads).

Every point of the model is decoded, scale factors applied. A point whose registers are garbage
(scale factor out of range, a string that is not UTF-8) does not fail the whole model: it reads as
None and its problem is kept, so only a driver that needs that very point raises ``BadDeviceData``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.devices.bus import MAX_READ_REGISTERS, ModbusBus
from gateway.devices.errors import BadDeviceData
from protocols.sunspec.models import ModelDef, ModelError, PointDef, load_model
from protocols.sunspec.points import PointValueError, apply_sf, decode

Value = int | float | str | None

_COUNTED_GROUPS: Mapping[int, str] = {714: "Prt"}
"""Models whose repeating group's count is a point of the model (model 714: one ``Prt`` per DC
port, counted by ``NPrt``): the instance count follows from the device's model length ``L``."""


@dataclass(frozen=True, slots=True)
class ModelLocation:
    """Where one model sits in a device's map: ``address`` is its ID register, ``length`` its L."""

    model_id: int
    address: int
    length: int


@dataclass(frozen=True, slots=True)
class ModelData:
    """One model as read from a device: raw registers (from the ID register on) and decoded values.

    ``values`` holds every point of the definition, scaled; None means "not implemented" (or beyond
    the device's shorter model); ``unscaled`` the same before scaling, for exact integer work;
    ``problems`` names the points whose registers made no sense.
    """

    definition: ModelDef
    location: ModelLocation
    registers: tuple[int, ...]
    values: Mapping[str, Value]
    unscaled: Mapping[str, Value]
    problems: Mapping[str, str] = field(default_factory=dict)

    def value(self, name: str) -> Value:
        """The decoded, scaled value of point ``name`` (None if not implemented)."""
        if name in self.problems:
            raise BadDeviceData(self._where(name) + self.problems[name])
        if name not in self.values:
            raise KeyError(f"model {self.definition.id} has no point {name!r}")
        return self.values[name]

    def optional_number(self, name: str) -> float | None:
        """A numeric point, or None if the device does not implement it."""
        value = self.value(name)
        if isinstance(value, str):
            raise BadDeviceData(self._where(name) + f"expected a number, got {value!r}")
        return None if value is None else float(value)

    def number(self, name: str) -> float:
        """A numeric point the caller cannot work without."""
        value = self.optional_number(name)
        if value is None:
            raise BadDeviceData(self._where(name) + f"required but {self.missing(name)}")
        return value

    def missing(self, name: str) -> str | None:
        """Why point ``name`` has no value, None if it has one: "not implemented", or "its scale
        factor … not implemented" (SunSpec: a value without its scale means nothing), or the
        problem its registers had."""
        if name in self.problems:
            return self.problems[name]
        if self.values[name] is not None:
            return None
        sf = self.definition.point(name).sf
        if self.unscaled[name] is not None and isinstance(sf, str):
            return f"its scale factor {sf} not implemented"
        return "not implemented"

    def optional_int(self, name: str) -> int | None:
        """An unscaled integer point (enum, bitfield, count), or None if not implemented."""
        value = self.value(name)
        if value is not None and not isinstance(value, int):
            raise BadDeviceData(self._where(name) + f"expected an integer, got {value!r}")
        return value

    def optional_text(self, name: str) -> str | None:
        value = self.value(name)
        if value is not None and not isinstance(value, str):
            raise BadDeviceData(self._where(name) + f"expected text, got {value!r}")
        return value

    def text(self, name: str) -> str:
        value = self.optional_text(name)
        if value is None:
            raise BadDeviceData(self._where(name) + "required but empty")
        return value

    def raw_int(self, name: str) -> int | None:
        """Point ``name`` as the device holds it, before scaling (None if not implemented)."""
        self.value(name)  # raises for an unknown point or a garbage one
        value = self.unscaled[name]
        if value is not None and not isinstance(value, int):
            raise BadDeviceData(self._where(name) + f"expected an integer, got {value!r}")
        return value

    def scale_factor(self, name: str) -> int:
        """The exponent that scales point ``name`` (0 if unscaled): what a writer needs."""
        point = self.definition.point(name)
        if isinstance(point.sf, int):
            return point.sf
        if point.sf is None:
            return 0
        sf = self.value(point.sf)
        if not isinstance(sf, int):
            raise BadDeviceData(self._where(name) + f"scale factor {point.sf} not implemented")
        return sf

    def _where(self, name: str) -> str:
        loc = self.location
        return f"model {loc.model_id} at {loc.address}, point {name}: "


def model_definition(location: ModelLocation) -> ModelDef:
    """The definition that matches the device's copy of the model, repeating groups sized by L."""
    group = _COUNTED_GROUPS.get(location.model_id)
    try:
        if group is None:
            return load_model(location.model_id)
        fixed = load_model(location.model_id, {group: 0}).length
        per = load_model(location.model_id, {group: 1}).length - fixed
        count = max(0, (location.length - fixed) // per)
        return load_model(location.model_id, {group: count})
    except ModelError as exc:
        raise ValueError(f"cannot decode model {location.model_id}: {exc}") from None


async def read_models(
    bus: ModbusBus, *, unit: int, locations: Iterable[ModelLocation]
) -> dict[int, ModelData]:
    """Read and decode the models at ``locations``, keyed by model id."""
    wanted = sorted(set(locations), key=lambda loc: loc.address)
    ids = [loc.model_id for loc in wanted]
    if len(set(ids)) != len(ids):
        raise ValueError(f"read_models takes each model id once, got {ids}")
    definitions = {loc: model_definition(loc) for loc in wanted}
    registers: dict[int, int] = {}
    for start, count in plan_reads(wanted, definitions):
        regs = await bus.read_registers(unit=unit, address=start, count=count)
        registers.update(zip(range(start, start + count), regs, strict=True))
    out: dict[int, ModelData] = {}
    for loc in wanted:
        regs = tuple(registers[a] for a in range(loc.address, loc.address + 2 + loc.length))
        out[loc.model_id] = decode_model(loc, definitions[loc], regs)
    return out


def plan_reads(
    locations: list[ModelLocation], definitions: Mapping[ModelLocation, ModelDef]
) -> list[tuple[int, int]]:
    """(start, count) reads that cover ``locations`` (sorted by address) with the fewest requests.

    Adjacent models share reads; each read holds at most ``MAX_READ_REGISTERS`` registers and
    ends on a model boundary, or on a point boundary inside a model too long for one read. So a
    model that fits in one read is read in one: its values and the scale factors SunSpec lets a
    device change at run time (every ``sunssf`` not marked static) come from the same instant.
    """
    runs: list[tuple[int, int, set[int]]] = []  # (start, end, allowed cut addresses)
    for loc in locations:
        start, end = loc.address, loc.address + 2 + loc.length
        cuts = {start, end}
        if end - start > MAX_READ_REGISTERS:
            cuts |= {start + p.offset for p in definitions[loc].points if start + p.offset < end}
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end, runs[-1][2] | cuts)
        else:
            runs.append((start, end, cuts))
    reads: list[tuple[int, int]] = []
    for start, end, cuts in runs:
        position = start
        while position < end:
            limit = min(end, position + MAX_READ_REGISTERS)
            stop = max((c for c in cuts if position < c <= limit), default=limit)
            reads.append((position, stop - position))
            position = stop
    return reads


def decode_model(location: ModelLocation, definition: ModelDef, regs: tuple[int, ...]) -> ModelData:
    """Decode raw registers (ID register first) into a ``ModelData``; checks ID and L first."""
    if len(regs) < 2 or regs[0] != location.model_id or regs[1] != location.length:
        raise BadDeviceData(
            f"expected model {location.model_id} (L={location.length}) at {location.address}, "
            f"found ID/L {list(regs[:2])}: the device's map changed; discover it again"
        )
    raw: dict[str, Value] = {}
    problems: dict[str, str] = {}
    for point in definition.points:
        if point.offset + point.size > len(regs):
            raw[point.name] = None
            continue
        try:
            raw[point.name] = decode(point, regs[point.offset : point.offset + point.size])
        except PointValueError as exc:
            raw[point.name] = None
            problems[point.name] = str(exc)
    values: dict[str, Value] = {}
    for point in definition.points:
        values[point.name] = _scaled(point, raw, problems)
    return ModelData(
        definition=definition, location=location, registers=regs, values=values, unscaled=raw,
        problems=problems,
    )


def _scaled(point: PointDef, raw: Mapping[str, Value], problems: dict[str, str]) -> Value:
    value = raw[point.name]
    if point.sf is None or point.type == "sunssf" or not isinstance(value, int):
        return value
    sf = raw.get(point.sf) if isinstance(point.sf, str) else point.sf
    if sf is None:
        return None  # value without a scale means nothing; SunSpec: both or neither implemented
    if not isinstance(sf, int):
        problems[point.name] = f"scale factor {point.sf} is {sf!r}"
        return None
    try:
        return apply_sf(value, sf)
    except PointValueError as exc:
        problems[point.name] = str(exc)
        return None
