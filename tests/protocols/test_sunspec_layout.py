"""Our flattened SunSpec layouts agree with pysunspec2's own reading of the same registers.

pysunspec2's ``device.Model`` is an independent implementation of the model definitions (it walks
groups itself, computes repeating-group counts from L): if our offsets, sizes or decoding differ
from it on any point of any role, a gateway using either would read different values.
"""

import json
import random
import struct
from pathlib import Path

import pytest
import sunspec2.device as ss_device
import sunspec2.mb as ss_mb
import sunspec2.mdef as ss_mdef

from protocols.sunspec import ROLE_MODELS, DeviceMap, ModelError, decode, encode, load_model
from protocols.sunspec.models import VENDOR_MODELS, ModelDef, PointDef

VENDOR_JSON = Path(__file__).resolve().parents[2] / "protocols" / "sunspec" / "model_64200.json"


def _ss_model(model: ModelDef, regs: list[int]) -> ss_device.Model:
    vendor = VENDOR_MODELS.get(model.id)
    model_def = ss_mdef.from_json_file(str(vendor)) if vendor is not None else None
    data = struct.pack(f">{len(regs)}H", *regs)
    m = ss_device.Model(model_id=model.id, model_len=model.length, model_def=model_def, data=data)
    assert not m.error_info, m.error_info
    return m


def _ss_point(m: ss_device.Model, name: str) -> ss_device.Point:
    """pysunspec2's point for our flattened name ``G[i].P`` / ``G.P`` / ``P``."""
    node = m
    *groups, leaf = name.split(".")
    for g in groups:
        if g.endswith("]"):
            gname, idx = g[:-1].split("[")
            node = node.groups[gname][int(idx)]
        else:
            node = node.groups[g]
    return node.points[leaf]


def _image(dmap: DeviceMap, model: ModelDef, seed: int) -> list[int]:
    """A random register image of the model, with printable strings so both sides can decode,
    and the map's structural registers (ID, L, repeating-group counts) in place."""
    rng = random.Random(seed)
    regs = [rng.randrange(0x10000) for _ in range(model.length + 2)]
    start = dmap.block(model.id).address
    for address, value in dmap.fixed_registers().items():
        if start <= address < start + len(regs):
            regs[address - start] = value
    for p in model.points:
        if p.type == "string":
            text = "".join(rng.choice("abcXYZ019") for _ in range(rng.randrange(1, 2 * p.size)))
            regs[p.offset:p.offset + p.size] = encode(p, text)
        if p.type == "sunssf":
            regs[p.offset] = rng.randrange(-10, 11) & 0xFFFF
    return regs


@pytest.mark.parametrize("role", sorted(ROLE_MODELS))
def test_role_map_offsets_and_values_match_pysunspec2(role: str) -> None:
    dmap = DeviceMap.for_role(role)
    assert tuple(b.model_id for b in dmap) == ROLE_MODELS[role]
    for model in dmap.models:
        for seed in range(5):
            regs = _image(dmap, model, seed)
            ss = _ss_model(model, regs)
            assert ss.len == model.length + 2
            for p in model.points:
                theirs = _ss_point(ss, p.name)
                assert (theirs.offset, theirs.len) == (p.offset, p.size), p.name
                ours = decode(p, regs[p.offset:p.offset + p.size])
                info = ss_mb.point_type_info[p.type]
                if p.type == "pad":
                    assert ours is None
                elif not info.is_impl(theirs.value):
                    assert ours is None, p.name
                else:
                    assert ours == theirs.value, p.name


@pytest.mark.parametrize("role", sorted(ROLE_MODELS))
def test_chain_is_contiguous_from_suns_to_end_marker(role: str) -> None:
    dmap = DeviceMap.for_role(role)
    regs = dmap.fixed_registers()
    assert (regs[40000], regs[40001]) == (0x5375, 0x6E53)
    address = 40002
    for block in dmap:
        assert block.address == address
        assert (regs[address], regs[address + 1]) == (block.model_id, block.length)
        assert dmap.address(block.model_id, "ID") == address
        address = block.end
    assert (regs[address], regs[address + 1]) == (0xFFFF, 0)
    assert dmap.size == address + 2 - 40000


def test_addresses_gateway_code_relies_on() -> None:
    bat = DeviceMap.for_role("battery")
    assert bat.address(1, "Mn") == 40004
    assert bat.address(713, "SoC") == 40070 + 4
    inwrte = bat.point(124, "InWRte")
    assert (inwrte.type, inwrte.sf, inwrte.writable) == ("int16", "InOutWRte_SF", True)
    dcdc = DeviceMap.for_role("dcdc")
    assert dcdc.fixed_registers()[dcdc.address(714, "NPrt")] == 2
    assert dcdc.address(714, "Prt[1].DCV") - dcdc.address(714, "Prt[0].DCV") == 25
    assert dcdc.point(64200, "Mode").symbols == {
        "WAIT": 0, "CV": 1, "CC_CHARGE": 2, "CC_DISCHARGE": 3}


def test_sync_groups_get_dotted_names_and_sf_resolves_to_top_level() -> None:
    m = load_model(704)
    pf = m.point("PFWAbsRvrt.PF")
    assert pf.sf == "PF_SF"
    sfp = m.sf_point(pf)
    assert sfp is not None and sfp.type == "sunssf"


def test_vendor_model_validates_with_pysunspec2_schema() -> None:
    model_def = json.loads(VENDOR_JSON.read_text())
    assert ss_mdef.validate_model_def(model_def) == ""
    assert load_model(64200).length == model_def["group"]["points"][1]["value"]


def test_bad_input_gets_specific_errors() -> None:
    with pytest.raises(ValueError, match="unknown device role 'toaster'"):
        DeviceMap.for_role("toaster")
    with pytest.raises(ModelError, match="no SunSpec model definition for model 9999"):
        load_model(9999)
    with pytest.raises(KeyError, match="no point 'Nope'"):
        DeviceMap.for_role("meter").address(203, "Nope")
    with pytest.raises(KeyError, match="has no model 124"):
        DeviceMap.for_role("meter").address(124, "InWRte")


def test_point_def_is_frozen() -> None:
    p = load_model(1).point("Mn")
    assert isinstance(p, PointDef)
    with pytest.raises(AttributeError):
        p.offset = 3  # type: ignore[misc]
