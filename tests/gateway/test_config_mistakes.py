"""A config mistake costs the installer one line naming the key, never a traceback.

Through the command they type, ``gridpeer run --config FILE``, against a real key and membership
certificate: the named mistakes below each got a traceback (or a gateway that started on a value
it could not run) before, and hypothesis throws whole configs of random numbers at the same entry
point. A config that loads is then one the gateway runs on: it starts (its device, at a closed
port, reported absent and retried) and stops at its broker (a closed port too) with that one line
instead.
"""

from __future__ import annotations

import logging
import math
import re
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.cli import main
from gateway.config import ConfigError, load_config


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """``gridpeer run`` configures the root logger for the service; give it back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An installer's work: an authority, a node key and the node's certificate."""
    folder = tmp_path_factory.mktemp("home")
    assert main(["community", "init", "--key", str(folder / "authority.key")]) == 0
    from gateway.identity import load_key_file
    from protocols.signing import public_key_hex

    authority = public_key_hex(load_key_file(folder / "authority.key"))
    assert main(["init", "--dir", str(folder), "--node", "home-1", "--community", "elm-street",
                 "--authority-key", authority]) == 0
    node = public_key_hex(load_key_file(folder / "node.key"))
    assert main(["community", "admit", "--key", str(folder / "authority.key"),
                 "--community", "elm-street", "--node", "home-1", "--public-key", node,
                 "--out", str(folder / "node.cert")]) == 0
    return folder


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(home: Path, tables: Mapping[str, Mapping[str, object]]) -> str:
    """The config text: top-level keys under "", every other table by name."""
    authority = re.search(r'authority_key = "([0-9a-f]{64})"',
                          (home / "gridpeer.toml").read_text())
    assert authority is not None
    base: dict[str, dict[str, object]] = {
        "": {"node": "home-1", "key_file": "node.key", "certificate_file": "node.cert",
             "state_dir": "state"},
        "market": {"community": "elm-street", "broker": f"mqtt://127.0.0.1:{_closed_port()}",
                   "authority_key": authority[1]},
        "dashboard": {"enabled": False},
    }
    for table, values in tables.items():
        base.setdefault(table, {}).update(values)
    device = {"name": "battery", "kind": "battery",
              "url": f"tcp://127.0.0.1:{_closed_port()}", "timeout_s": 0.05}
    device.update(base.pop("devices", {}))
    lines = [f"{k} = {_toml(v)}" for k, v in base.pop("").items()]
    for table, values in base.items():
        lines += [f"[{table}]", *(f"{k} = {_toml(v)}" for k, v in values.items())]
    lines += ["[[devices]]", *(f"{k} = {_toml(v)}" for k, v in device.items())]
    return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _run(home: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """``gridpeer run`` on ``text``: the exit status and stderr's lines that are not JSON logs."""
    path = home / "gridpeer-test.toml"
    path.write_text(text)
    capsys.readouterr()
    code = main(["run", "--config", str(path)])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, [line for line in err.splitlines() if line and not line.startswith("{")]


@pytest.mark.parametrize(
    ("table", "values", "expected"),
    [
        ("market", {"grace_s": 0}, "market.grace_s: Input should be greater than or equal to "),
        ("market", {"gate_s": 0}, "market.gate_s: Input should be greater than or equal to "),
        ("market", {"gate_s": 10, "grace_s": 10},
         "market: gate_s (10 s) must be longer than grace_s (10 s)"),
        ("market", {"interval_s": 0.5, "gate_s": 0.2, "grace_s": 0.1},
         "market.interval_s: Input should be greater than or equal to 1"),
        ("market", {"interval_s": math.inf}, "market.interval_s: Input should be a finite number"),
        ("market", {"quorum_num": 1, "quorum_den": 3},
         "market: quorum_num/quorum_den must be more than 1/2 and at most 1, got 1/3"),
        ("envelope", {"ramp_w_per_s": math.inf},
         "envelope.ramp_w_per_s: Input should be a finite number"),
        ("envelope", {"soc_min_pct": math.nan},
         "envelope.soc_min_pct: Input should be a finite number"),
        ("tariffs", {"retail_price": 10**7},
         "tariffs.retail_price: Input should be less than or equal to 1000000"),
        ("devices", {"poll_s": 1e-9},
         "devices.0.poll_s: Input should be greater than or equal to 0.01"),
        ("devices", {"timeout_s": 2, "first_timeout_s": 0.5},
         "devices.0: first_timeout_s (0.5 s) must be at least timeout_s (2 s)"),
    ],
)
def test_a_config_mistake_is_one_line_naming_the_key(home, capsys, table, values, expected):
    code, lines = _run(home, _config(home, {table: values}), capsys)
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"gridpeer: {home / 'gridpeer-test.toml'}: {expected}"), lines


def test_a_config_that_loads_runs_past_its_absent_device_until_its_broker(home, capsys):
    code, lines = _run(home, _config(home, {}), capsys)
    assert code == 1 and len(lines) == 1 and "no connection to mqtt://" in lines[0], lines


_NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 0.0001, 0.001, 0.5, 1, 1.5, 10, 60, 900, 86_400, 86_401, 1e300, -1]),
    st.floats(0.01, 1000),  # values a gateway runs on, too, so some configs load
    st.integers(1, 1000),
)
_KEYS = {
    "market": ("interval_s", "gate_s", "grace_s", "quorum_num", "quorum_den", "epoch_ms"),
    "envelope": ("soc_min_pct", "soc_max_pct", "max_charge_w", "max_discharge_w",
                 "ramp_w_per_s", "revert_s", "converter_max_a", "bus_v_min", "bus_v_max",
                 "master_headroom_pct"),
    "tariffs": ("retail_price", "feed_in_price"),
    "preferences": ("min_sell_price", "max_buy_price", "reserve_pct"),
    "devices": ("poll_s", "timeout_s", "first_timeout_s", "stale_after", "unit"),
}
_CHANGES = st.lists(
    st.sampled_from([(t, k) for t, keys in _KEYS.items() for k in keys]).flatmap(
        lambda key: st.tuples(st.just(key), _NUMBER)),
    min_size=1, max_size=4,
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=_CHANGES)
def test_random_numbers_in_a_config_give_clear_lines_never_a_traceback(home, capsys, changes):
    tables: dict[str, dict[str, object]] = {}
    for (table, key), value in changes:
        tables.setdefault(table, {})[key] = value
    text = _config(home, tables)
    path = home / "gridpeer-test.toml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as exc:
        problems = str(exc).splitlines()
    else:
        problems = []
    code, lines = _run(home, text, capsys)
    assert code == 1
    event("loads" if not problems else "refused")
    if not problems:  # a config that loads is one the gateway starts on
        assert len(lines) == 1 and "no connection to mqtt://" in lines[0], lines
        return
    assert lines == [f"gridpeer: {problems[0]}", *problems[1:]]
    for line in problems:
        assert re.match(rf"{re.escape(str(path))}: [a-z_]+(\.[a-z0-9_]+)*: \S", line), line
