"""The checked-in per-role firmware tables are exactly what protocols/ renders, agree with
DeviceMap point for point, and give a board the very register image the full layout gives."""

import ast
import json
from pathlib import Path

import pytest

from firmware import board, config, metering
from firmware.modbus.bank import RegisterBank
from firmware.roles.common import Points, RoleError, role_table
from firmware.tables import BASE, TYPES
from protocols.sunspec.devices import ROLE_MODELS, DeviceMap
from protocols.sunspec.firmware_table import (
    ROLES_DIR,
    STATUS_MODEL,
    TARGET,
    board_models,
    render,
    unpack,
)
from protocols.sunspec.firmware_table import TYPES as RENDER_TYPES
from sim_devices.world import point_table
from tests.firmware.test_board import Hal


def test_checked_in_files_are_byte_identical_to_render() -> None:
    files = render()
    assert sorted(p.name for p in TARGET.glob("*.py")) == sorted(files)
    for name, text in files.items():
        assert (TARGET / name).read_bytes() == text.encode(), (
            f"firmware/tables/{name} is stale: run python -m protocols.sunspec.firmware_table")
    assert TYPES == RENDER_TYPES


@pytest.mark.parametrize("role", sorted(ROLE_MODELS))
def test_tables_agree_with_device_map(role: str) -> None:
    mod = role_table(role)
    chain = board_models(role)
    dmap = DeviceMap.for_role(role)
    assert [m.id for m, _ in chain][:len(dmap.models)] == list(ROLE_MODELS[role])
    assert chain[-1][0].id == STATUS_MODEL and mod.STATUS == chain[-1][1]
    assert mod.SIZE == chain[-1][1] + 2 + chain[-1][0].length + 2 - BASE
    assert len(mod.IMAGE) == 2 * mod.SIZE
    addresses = {m.id: a for m, a in chain}
    assert set(mod.TABLE) <= set(addresses) - {STATUS_MODEL}
    for model_id, (address, points) in mod.TABLE.items():
        assert address == addresses[model_id]
        model = next(m for m, _ in chain if m.id == model_id)
        for name, spec in points.items():
            p = model.point(name)
            assert unpack(spec) == (p.offset, p.type, p.size), name
    # structure registers as the protocol's layout has them
    for addr, value in dmap.fixed_registers().items():
        if role == "meter" or addr < dmap.end_address:
            assert int.from_bytes(mod.IMAGE[2 * (addr - BASE):2 * (addr - BASE) + 2]) == value


def _names_used(role: str) -> set[str]:
    """Point names the role code passes as literals to put/get/addr (first-order check)."""
    tree = ast.parse((ROLES_DIR / f"{role}.py").read_text())
    return {n.args[1].value for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr in ("put", "get", "addr") and len(n.args) >= 2
            and isinstance(n.args[1], ast.Constant) and isinstance(n.args[1].value, str)}


@pytest.mark.parametrize("role", sorted(ROLE_MODELS))
def test_every_literal_point_of_the_role_code_is_in_its_table(role: str) -> None:
    names = {n for points in role_table(role).TABLE.values() for n in points[1]}
    # ID and L are the skeleton (in IMAGE): the board hands the meter its 64210 address itself
    assert _names_used(role) - {"ID", "L"} <= names


@pytest.mark.parametrize("role", sorted(ROLE_MODELS))
def test_board_bank_equals_the_full_layout_bank(role: str, tmp_path: Path) -> None:
    """The compact table (IMAGE + only the used points) gives the registers that the full
    DeviceMap table (every point, as the simulator uses) gives the same role code."""
    cfg = config.parse(json.dumps({"device_id": "d-1", "role": role, "unit": 2, "baud": 9600,
                                   "tcp_port": 502}))
    dev = board.Board(cfg, Hal(), seq_path=str(tmp_path / "seq"))
    assert dev.role is not None and dev.error == config.ERR_KEY  # no key in this config

    dmap = DeviceMap.for_role(role)
    full = RegisterBank(BASE, role_table(role).SIZE)
    for addr, value in dmap.fixed_registers().items():
        full.set(addr, value)
    status_model, status = board_models(role)[-1]
    full.set(status, status_model.id)
    full.set(status + 1, status_model.length)
    full.set(status + 2 + status_model.length, 0xFFFF)
    board._build_role(role, Points(full, point_table(dmap)), Hal(), "d-1", 2, None, status)
    metering.blank(full, status, config.ERR_KEY)
    assert dev.bank.regs == full.regs


def test_a_role_table_is_loaded_alone_and_unknown_roles_are_errors() -> None:
    with pytest.raises(RoleError, match="toaster"):
        role_table("toaster")
