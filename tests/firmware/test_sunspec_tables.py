"""The checked-in firmware tables are exactly what protocols/ renders and agree with DeviceMap."""

import pytest

from firmware import sunspec_tables
from protocols.sunspec.devices import ROLE_MODELS, DeviceMap
from protocols.sunspec.firmware_table import TARGET, render


def test_checked_in_file_is_byte_identical_to_render() -> None:
    assert TARGET.read_bytes() == render().encode(), (
        "firmware/sunspec_tables.py is stale: run python -m protocols.sunspec.firmware_table")


@pytest.mark.parametrize("role", sorted(ROLE_MODELS))
def test_tables_agree_with_device_map(role: str) -> None:
    dmap = DeviceMap.for_role(role)
    size, fixed, table, sf = sunspec_tables.layout(role)
    assert size == dmap.size
    assert dict(fixed) == dmap.fixed_registers()
    assert list(table) == list(ROLE_MODELS[role])
    for block, model in zip(dmap.blocks, dmap.models, strict=True):
        id_address, points = table[model.id]
        assert id_address == block.address
        for p in model.points:
            assert points[p.name] == (p.offset, p.type, p.size)
            assert sf[model.id].get(p.name) == p.sf


def test_unknown_role_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown role: toaster"):
        sunspec_tables.layout("toaster")
