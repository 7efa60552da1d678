"""``[tariffs] schedule``, ``[grid]`` and ``[plan]`` in the gateway config: a file that cannot be
used, or a limit that makes no sense, is refused at load with lines naming the key, never later."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.config import ConfigError, parse_config


def _raw(**tables: dict[str, object]) -> dict[str, object]:
    key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"node": "home-1", "key_file": "node.key", "certificate_file": "node.cert",
            "state_dir": "state",
            "market": {"community": "elm-street", "authority_key": key.hex()}, **tables}


def test_a_tariff_file_is_read_relative_to_the_config_and_prices_the_day(tmp_path: Path) -> None:
    (tmp_path / "prices.csv").write_text("start,import_uwh,export_uwh\n"
                                         "2026-06-01T00:00Z,250,70\n2026-06-01T01:00Z,420,90\n")
    config = parse_config(_raw(tariffs={"schedule": "prices.csv"}), source="gw.toml",
                          base=tmp_path)
    assert config.tariffs.schedule == tmp_path / "prices.csv"
    schedule = config.tariffs.tariff_schedule()
    one = 1_780_272_000_000  # 2026-06-01T00:00Z
    assert schedule.average(one, 3_600_000) == (250, 70)
    assert schedule.average(one + 3_600_000, 900_000) == (420, 90)


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("missing.csv", None, "tariffs.schedule: {path}: No such file or directory"),
    ("prices.txt", "", "tariffs.schedule: {path}: a tariff file is .csv or .toml, not '.txt'"),
    ("prices.csv", "start,import_uwh\n2026-06-01T00:00Z,lots\n",
     "tariffs.schedule: {path}:2: "),
    ("prices.csv", "start,import_uwh,export_uwh\n2026-06-01T00:00Z,50,90\n",
     "tariffs.schedule: {path}"),
])
def test_a_tariff_file_that_cannot_be_used_is_one_line_naming_the_key(
        tmp_path: Path, name: str, text: str | None, expected: str) -> None:
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as err:
        parse_config(_raw(tariffs={"schedule": name}), source="gw.toml", base=tmp_path)
    lines = str(err.value).splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("gw.toml: " + expected.format(path=tmp_path / name)), lines


@pytest.mark.parametrize(("grid", "expected"), [
    ({"export_limit_w": -5}, "gw.toml: grid.export_limit_w: Input should be greater than"),
    ({"dimming": ["17:00-20:00"]}, "gw.toml: grid: dimming windows need dimmed_import_w"),
    ({"dimmed_import_w": 4200, "dimming": ["5pm-8pm"]}, "gw.toml: grid.dimming: '5pm-8pm' is"),
    ({"export_limt_w": 0}, "gw.toml: grid.export_limt_w: unknown key"),
])
def test_a_grid_limit_mistake_is_one_line_naming_the_key(tmp_path: Path, grid: dict[str, object],
                                                         expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_raw(grid=grid), source="gw.toml", base=tmp_path)
    lines = str(err.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_the_grid_limits_and_planner_reach_the_plan(tmp_path: Path) -> None:
    config = parse_config(_raw(grid={"export_limit_w": 0, "import_limit_w": 11_000},
                               plan={"planner": "optimiser"}), source="gw.toml", base=tmp_path)
    assert config.grid is not None
    limits = config.grid.limits()
    assert (limits.export_w, limits.import_w) == (0, 11_000)
    assert config.plan.make() is not None
    default = parse_config(_raw(), source="gw.toml", base=tmp_path)
    # the heuristic by default: the optimiser is opt-in until it keeps "no home pays more"
    assert default.grid is None and default.plan.make() is None
    fixed = default.tariffs.tariff_schedule()
    assert fixed.average(0, 900_000) == (300, 80)
