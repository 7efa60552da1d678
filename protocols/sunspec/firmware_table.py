"""Render ``firmware/sunspec_tables.py``: each role's SunSpec layout as plain MicroPython data.

The board cannot read pysunspec2's JSON (no room, no json of that size in RAM), so the layouts of
``devices.py`` are rendered once into a checked-in module of ints, strings and tuples. A test keeps
the file identical to what this renders; ``python -m protocols.sunspec.firmware_table`` rewrites it.
The table's shape is what ``firmware/roles/common.Points`` consumes (the simulator builds the same
shape from ``DeviceMap`` directly). Each role is built by a function, so a board holds only its
own role in RAM.
"""

from __future__ import annotations

import sys
from pathlib import Path

from protocols.sunspec.devices import ROLE_MODELS, SUNSPEC_BASE, DeviceMap

TARGET = Path(__file__).resolve().parents[2] / "firmware" / "sunspec_tables.py"

def _role_function(role: str) -> str:
    dmap = DeviceMap.for_role(role)
    out = [f"def _{role}():\n", f"    return (\n        {dmap.size},\n        (\n"]
    out += [f"            ({a}, {v}),\n" for a, v in sorted(dmap.fixed_registers().items())]
    out.append("        ),\n        {\n")
    for block, model in zip(dmap.blocks, dmap.models, strict=True):
        out.append(f"            {model.id}: ({block.address}, {{\n")
        out += [f"                \"{p.name}\": ({p.offset}, \"{p.type}\", {p.size}),\n"
                for p in model.points]
        out.append("            }),\n")
    out.append("        },\n        {\n")
    for model in dmap.models:
        scaled = [p for p in model.points if p.sf is not None]
        if any(isinstance(p.sf, int) for p in scaled):
            raise ValueError(f"model {model.id}: a fixed sf cannot be expressed in the tables")
        out.append(f"            {model.id}: {{\n")
        out += [f"                \"{p.name}\": \"{p.sf}\",\n" for p in scaled]
        out.append("            },\n")
    out.append("        },\n    )\n")
    return "".join(out)


def render() -> str:
    """The full text of ``firmware/sunspec_tables.py``."""
    head = (
        '"""SunSpec register layouts per device role. GENERATED: do not edit.\n\n'
        "Rewrite with ``python -m protocols.sunspec.firmware_table``; a test checks it matches.\n"
        "``layout(role)`` returns ``(size, fixed, table, sf)``:\n\n"
        f"- size: registers from BASE ({SUNSPEC_BASE}) through the end marker;\n"
        '- fixed: ((address, value), ...): "SunS", model IDs and Ls, group counts, end marker;\n'
        "- table: {model_id: (address of its ID register, {point: (offset, type, registers)})},\n"
        "  offsets from the ID register, types as SunSpec names them;\n"
        "- sf: {model_id: {point: name of its scale-factor point}}.\n\n"
        "Each role is built on call, not at import, so a board holds only its own role in RAM.\n"
        '"""\n\n'
        f"BASE = {SUNSPEC_BASE}\n"
        f"ROLES = {tuple(ROLE_MODELS)!r}\n\n\n"
        "def layout(role):\n"
        + "".join(f"    if role == \"{r}\":\n        return _{r}()\n" for r in ROLE_MODELS)
        + "    raise ValueError(\"unknown role: \" + str(role))\n"
    )
    return head + "".join(f"\n\n{_role_function(r)}" for r in ROLE_MODELS)


def main() -> int:
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
