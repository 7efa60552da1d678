"""Where each SunSpec model sits in a device's register space, per device role.

Every gridpeer device (firmware, simulator) and the gateway's discovery agree on one layout per
role: "SunS" at 40000, then the role's models in the order of ``ROLE_MODELS`` (ID, L, body), then
the end marker 0xFFFF, 0. Declaring it once here means a simulator, the generated firmware tables
and a gateway test all compute the same addresses instead of each counting registers by hand.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from protocols.sunspec.models import ModelDef, PointDef, load_model

SUNSPEC_BASE = 40000
SUNS_MARKER = (0x5375, 0x6E53)  # "SunS"
END_MODEL_ID = 0xFFFF

#: A meter serves vendor model 64210 (its HMAC-tagged energy counters, docs/sunspec-vendor-model.md)
#: as part of its chain, so a simulated meter serves the tags at the same address a board does.
#: Boards of the other roles append 64210 too (``firmware/board.py``), after the chain below.
ROLE_MODELS: Mapping[str, tuple[int, ...]] = {
    "meter": (1, 203, 64210),
    "pv": (1, 701, 702, 704),
    "battery": (1, 713, 802, 124),
    "dcdc": (1, 714, 64200),
    "load": (1, 64220),
}

#: Instances of repeating groups whose count is a point: a converter has two DC ports (the local
#: port and the bus side), reported by 714's ``NPrt``.
GROUP_COUNTS: Mapping[int, Mapping[str, int]] = {714: {"Prt": 2}}
_COUNT_POINTS: Mapping[int, Mapping[str, str]] = {714: {"Prt": "NPrt"}}


@dataclass(frozen=True, slots=True)
class ModelBlock:
    """One model in the chain: its ID register is at ``address``; ``length`` is its L."""

    model_id: int
    address: int
    length: int

    @property
    def end(self) -> int:
        """First register after the model (where the next model's ID sits)."""
        return self.address + 2 + self.length


@dataclass(frozen=True, slots=True)
class DeviceMap:
    """The register layout of one device role."""

    role: str
    base: int
    models: tuple[ModelDef, ...]
    blocks: tuple[ModelBlock, ...]

    @classmethod
    def for_role(cls, role: str, base: int = SUNSPEC_BASE) -> DeviceMap:
        """The layout for ``role`` (one of ``ROLE_MODELS``) starting at ``base``."""
        if role not in ROLE_MODELS:
            raise ValueError(f"unknown device role {role!r}; expected one of {sorted(ROLE_MODELS)}")
        models = tuple(load_model(mid, GROUP_COUNTS.get(mid)) for mid in ROLE_MODELS[role])
        blocks = []
        address = base + len(SUNS_MARKER)
        for m in models:
            blocks.append(ModelBlock(m.id, address, m.length))
            address += 2 + m.length
        return cls(role=role, base=base, models=models, blocks=tuple(blocks))

    @property
    def end_address(self) -> int:
        """Address of the end marker's 0xFFFF."""
        return self.blocks[-1].end

    @property
    def size(self) -> int:
        """Registers from ``base`` through the end marker's length register."""
        return self.end_address + 2 - self.base

    def __iter__(self) -> Iterator[ModelBlock]:
        return iter(self.blocks)

    def model(self, model_id: int) -> ModelDef:
        for m in self.models:
            if m.id == model_id:
                return m
        raise KeyError(f"role {self.role!r} has no model {model_id}; it has "
                       f"{[m.id for m in self.models]}")

    def block(self, model_id: int) -> ModelBlock:
        for b in self.blocks:
            if b.model_id == model_id:
                return b
        raise KeyError(f"role {self.role!r} has no model {model_id}")

    def point(self, model_id: int, point_name: str) -> PointDef:
        return self.model(model_id).point(point_name)

    def address(self, model_id: int, point_name: str) -> int:
        """Holding-register address of ``point_name`` in model ``model_id``."""
        return self.block(model_id).address + self.point(model_id, point_name).offset

    def fixed_registers(self) -> dict[int, int]:
        """Registers every device of the role holds constant: the chain's structure.

        "SunS", each model's ID and L, the repeating-group count points, and the end marker; the
        rest (readings, scale factors, nameplate) is the role code's to fill.
        """
        regs = {self.base: SUNS_MARKER[0], self.base + 1: SUNS_MARKER[1]}
        for b in self.blocks:
            regs[b.address] = b.model_id
            regs[b.address + 1] = b.length
            for group, count_point in _COUNT_POINTS.get(b.model_id, {}).items():
                regs[self.address(b.model_id, count_point)] = GROUP_COUNTS[b.model_id][group]
        regs[self.end_address] = END_MODEL_ID
        regs[self.end_address + 1] = 0
        return regs
