"""SunSpec model definitions, flattened into register offsets.

pysunspec2 ships every SunSpec model as JSON; that JSON is the single source of offsets, types and
scale factors for the gateway, the simulator and the generated firmware tables. We read it as data
(never import pysunspec2's synchronous client) and flatten the nested groups into one tuple of
points, each with its register offset from the model's ID register, because every consumer needs
"which register holds this point" and nothing else of the group structure.

Group naming: a repeating group (``count`` set) is instantiated ``count`` times with names
``Group[i].Point`` (``i`` from 0); a group that occurs once (e.g. model 704's ``PFWInj`` sync group)
gives ``Group.Point``. A repeating group whose count is a point of the model (714's ``Prt``, counted
by ``NPrt``) has no fixed length, so the caller says how many instances the device has.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

#: Register length of every fixed-size point type; ``string`` takes its ``size`` from the model.
TYPE_SIZES: Mapping[str, int] = {
    "int16": 1, "uint16": 1, "count": 1, "acc16": 1, "enum16": 1, "bitfield16": 1, "pad": 1,
    "sunssf": 1,
    "int32": 2, "uint32": 2, "acc32": 2, "enum32": 2, "bitfield32": 2, "ipaddr": 2, "float32": 2,
    "int64": 4, "uint64": 4, "acc64": 4, "float64": 4, "eui48": 4,
    "ipv6addr": 8,
}

VENDOR_MODELS: Mapping[int, Path] = {
    64200: Path(__file__).with_name("model_64200.json"),  # DC-DC converter control
    64210: Path(__file__).with_name("model_64210.json"),  # device status, tagged energy counters
    64220: Path(__file__).with_name("model_64220.json"),  # controllable load (EVSE, appliance)
}


class ModelError(ValueError):
    """A model id has no definition, or a definition is malformed (names the model and point)."""


@dataclass(frozen=True, slots=True)
class PointDef:
    """One point of a model, at ``offset`` registers from the model's ID register.

    ``sf`` is the name of the model's scale-factor point (resolved within the same model), a fixed
    power-of-ten exponent, or None for an unscaled point. ``symbols`` maps enum/bitfield names to
    values.
    """

    name: str
    offset: int
    size: int
    type: str
    sf: str | int | None = None
    units: str | None = None
    access: str = "R"
    mandatory: bool = False
    static: bool = False
    """SunSpec's ``"static": "S"``: the value never changes while the device runs (nameplate)."""
    symbols: Mapping[str, int] | None = None
    value: int | str | None = None

    @property
    def writable(self) -> bool:
        return self.access == "RW"


@dataclass(frozen=True, slots=True)
class ModelDef:
    """A flattened model. ``length`` is SunSpec's ``L``: registers after the ID and L registers."""

    id: int
    name: str
    length: int
    points: tuple[PointDef, ...]

    def point(self, name: str) -> PointDef:
        """The point called ``name``; a KeyError lists what the model has instead."""
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(f"model {self.id} ({self.name}) has no point {name!r}")

    def sf_point(self, point: PointDef) -> PointDef | None:
        """The scale-factor point that scales ``point``, or None if its sf is fixed or absent."""
        return self.point(point.sf) if isinstance(point.sf, str) else None


def _definition_path(model_id: int) -> Path:
    if model_id in VENDOR_MODELS:
        return VENDOR_MODELS[model_id]
    # find_spec locates the package without executing it: we want its data files, not its code.
    spec = importlib.util.find_spec("sunspec2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("pysunspec2 is not installed: it provides the SunSpec model definitions")
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "models" / "json" / f"model_{model_id}.json"


def _flatten(
    model_id: int,
    group: Mapping[str, Any],
    prefix: str,
    offset: int,
    counts: Mapping[str, int],
    out: list[PointDef],
) -> int:
    for raw in group.get("points", ()):
        name = raw["name"]
        ptype = raw["type"]
        size = raw.get("size") if ptype == "string" else TYPE_SIZES.get(ptype)
        if not isinstance(size, int) or size < 1:
            raise ModelError(f"model {model_id}: point {prefix}{name} has bad type/size {ptype!r}")
        sf = raw.get("sf")
        if isinstance(sf, str):
            try:
                sf = int(sf)
            except ValueError:
                sf = prefix + sf if _has_point(group, sf) else sf
        symbols = {s["name"]: int(s["value"]) for s in raw.get("symbols", ())} or None
        out.append(PointDef(
            name=prefix + name, offset=offset, size=size, type=ptype, sf=sf,
            units=raw.get("units"), access=raw.get("access", "R"),
            mandatory=raw.get("mandatory") == "M", static=raw.get("static") == "S",
            symbols=symbols, value=raw.get("value"),
        ))
        offset += size
    for sub in group.get("groups", ()):
        gname = sub["name"]
        count = sub.get("count")
        if count is None:
            offset = _flatten(model_id, sub, f"{prefix}{gname}.", offset, counts, out)
            continue
        n = count if isinstance(count, int) else counts.get(gname, 1)
        for i in range(n):
            offset = _flatten(model_id, sub, f"{prefix}{gname}[{i}].", offset, counts, out)
    return offset


def _has_point(group: Mapping[str, Any], name: str) -> bool:
    return any(p["name"] == name for p in group.get("points", ()))


def load_model(model_id: int, group_counts: Mapping[str, int] | None = None) -> ModelDef:
    """Load and flatten model ``model_id``.

    ``group_counts`` gives the number of instances of repeating groups whose count is a point
    (e.g. ``{"Prt": 2}`` for model 714); such a group defaults to one instance.
    """
    return _load(model_id, tuple(sorted((group_counts or {}).items())))


@cache
def _load(model_id: int, counts: tuple[tuple[str, int], ...]) -> ModelDef:
    path = _definition_path(model_id)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        group = data["group"]
    except FileNotFoundError:
        raise ModelError(f"no SunSpec model definition for model {model_id}") from None
    except (KeyError, json.JSONDecodeError) as exc:
        raise ModelError(f"model {model_id}: malformed definition {path.name}: {exc}") from None
    if data.get("id") != model_id:
        raise ModelError(f"model {model_id}: {path.name} declares id {data.get('id')}")
    points: list[PointDef] = []
    end = _flatten(model_id, group, "", 0, dict(counts), points)
    model = ModelDef(id=model_id, name=group["name"], length=end - 2, points=tuple(points))
    if [p.name for p in points[:2]] != ["ID", "L"]:
        raise ModelError(f"model {model_id}: first points must be ID and L")
    declared = model.point("L").value
    if isinstance(declared, int) and declared != model.length:
        raise ModelError(
            f"model {model_id}: L is declared {declared} but points give {model.length}"
        )
    for p in points:
        if isinstance(p.sf, str):
            try:
                sfp = model.point(p.sf)
            except KeyError:
                raise ModelError(f"model {model_id}: {p.name} scaled by missing {p.sf}") from None
            if sfp.type != "sunssf":
                raise ModelError(f"model {model_id}: {p.name} scaled by non-sunssf {p.sf}")
    return model
