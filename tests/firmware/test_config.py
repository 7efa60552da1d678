"""Config: every bad case gives safe defaults plus its error bit, never an exception, on CPython
and on real MicroPython alike."""

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware import config
from tests.firmware.test_metering import run_micropython

GOOD = {"device_id": "home7-meter", "role": "pv", "unit": 7, "baud": 19200, "tcp_port": 1502,
        "key": "ab" * 32}
DEFAULTS = ("unconfigured", "meter", 1, 9600, 502, None)


def _with(**change: object) -> str:
    data = dict(GOOD)
    for name, value in change.items():
        if value is _DROP:
            del data[name]
        else:
            data[name] = value
    return json.dumps(data)


_DROP = object()

# (config text, expected error bits): each case breaks one thing.
CASES = {
    "good": (json.dumps(GOOD), 0),
    "not json": ("{device_id: x", config.ERR_UNREADABLE),
    "empty": ("", config.ERR_UNREADABLE),
    "a list": ("[1, 2]", config.ERR_UNREADABLE),
    "null": ("null", config.ERR_UNREADABLE),
    "id missing": (_with(device_id=_DROP), config.ERR_DEVICE_ID),
    "id too long": (_with(device_id="x" * 33), config.ERR_DEVICE_ID),
    "id with space": (_with(device_id="home 7"), config.ERR_DEVICE_ID),
    "id not str": (_with(device_id=7), config.ERR_DEVICE_ID),
    "role unknown": (_with(role="toaster"), config.ERR_ROLE),
    "unit 0": (_with(unit=0), config.ERR_UNIT),
    "unit 248": (_with(unit=248), config.ERR_UNIT),
    "unit bool": (_with(unit=True), config.ERR_UNIT),
    "unit str": (_with(unit="7"), config.ERR_UNIT),
    "baud odd": (_with(baud=12345), config.ERR_BAUD),
    "baud float": (_with(baud=9600.0), config.ERR_BAUD),
    "port 0": (_with(tcp_port=0), config.ERR_TCP_PORT),
    "port big": (_with(tcp_port=70000), config.ERR_TCP_PORT),
    "key missing": (_with(key=_DROP), config.ERR_KEY),
    "key not hex": (_with(key="zz" * 32), config.ERR_KEY),
    "key odd": (_with(key="abc"), config.ERR_KEY),
    "key short": (_with(key="ab" * 8 + "a"), config.ERR_KEY),
    "key 15 bytes": (_with(key="ab" * 15), config.ERR_KEY),
    "unknown field": (_with(wifi="x"), config.ERR_UNKNOWN_KEY),
    "two bad": (_with(unit=-1, baud=1), config.ERR_UNIT | config.ERR_BAUD),
    "all missing": ("{}", config.ERR_DEVICE_ID | config.ERR_ROLE | config.ERR_UNIT
                    | config.ERR_BAUD | config.ERR_TCP_PORT | config.ERR_KEY),
}


def _fields(cfg: config.Config) -> tuple[object, ...]:
    return (cfg.device_id, cfg.role, cfg.unit, cfg.baud, cfg.tcp_port,
            cfg.key.hex() if cfg.key else None, cfg.error)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_bad_case_gives_defaults_and_its_bit(name: str) -> None:
    text, error = CASES[name]
    cfg = config.parse(text)
    assert cfg.error == error
    good = (GOOD["device_id"], GOOD["role"], GOOD["unit"], GOOD["baud"], GOOD["tcp_port"],
            bytes.fromhex(GOOD["key"]))
    got = (cfg.device_id, cfg.role, cfg.unit, cfg.baud, cfg.tcp_port, cfg.key)
    data = json.loads(text) if error != config.ERR_UNREADABLE else {}
    for i, field in enumerate(("device_id", "role", "unit", "baud", "tcp_port", "key")):
        bad = error & getattr(config, "ERR_" + field.upper()) or field not in data
        assert got[i] == (DEFAULTS[i] if bad else good[i]), field


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    cfg = config.load(str(tmp_path / "none.json"))
    assert _fields(cfg) == (*DEFAULTS, config.ERR_MISSING)
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    assert config.load(str(tmp_path / "bin.json")).error == config.ERR_UNREADABLE
    (tmp_path / "ok.json").write_text(json.dumps(GOOD))
    assert config.load(str(tmp_path / "ok.json")).error == 0


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_parse_never_raises(text: str | bytes) -> None:
    assert config.parse(text).error >= 0


def test_micropython_parses_every_case_as_cpython(tmp_path: Path) -> None:
    names = sorted(CASES)
    script = f"""
import json
from firmware import config
for text in json.loads({json.dumps(json.dumps([CASES[n][0] for n in names]))}):
    c = config.parse(text)
    print(repr((c.device_id, c.role, c.unit, c.baud, c.tcp_port,
                c.key.hex() if c.key else None, c.error)))
c = config.load('/no/such/config.json')
print(repr((c.device_id, c.role, c.error)))
"""
    lines = run_micropython(tmp_path, script)
    expected = [repr(_fields(config.parse(CASES[n][0]))) for n in names]
    expected.append(repr(("unconfigured", "meter", config.ERR_MISSING)))
    assert lines == expected
