"""Write SunSpec points: raw values encoded by ``protocols.sunspec`` and sent in one FC16.

One request per call, and only for points that sit next to each other: a device answers a write
that spans a read-only register with an exception, so a driver groups its writes the way the
device's writable windows are laid out and never "fills the gap" with values it did not mean.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.devices.bus import ModbusBus
from gateway.devices.model_reader import ModelData
from protocols.sunspec.points import encode


async def write_points(
    bus: ModbusBus, *, unit: int, model: ModelData, values: Mapping[str, int]
) -> None:
    """Write raw (already scaled) ``values`` to adjacent writable points of ``model``."""
    if not values:
        raise ValueError("write_points needs at least one point")
    points = sorted((model.definition.point(name) for name in values), key=lambda p: p.offset)
    registers: list[int] = []
    for previous, point in zip([None, *points], points, strict=False):
        if not point.writable:
            raise ValueError(f"model {model.definition.id} point {point.name} is read-only")
        if previous is not None and previous.offset + previous.size != point.offset:
            raise ValueError(
                f"model {model.definition.id}: {previous.name} and {point.name} are not adjacent"
            )
        registers.extend(encode(point, values[point.name]))
    address = model.location.address + points[0].offset
    await bus.write_registers(unit=unit, address=address, values=registers)
