"""The gateway's copy of its meter key: configured like the node key, refused with a clear reason
when it is missing, readable by others, not hex or the wrong size; and the key ``gridpeer flash``
saves is the key the gateway loads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from gateway.identity import IdentityError
from gateway.installer.flash import save_key
from gateway.meterkey import load_meter_key

CONFIG = """
node = "home-1"
key_file = "node.key"
certificate_file = "node.cert"
state_dir = "state"
{meter_key}
[market]
community = "elm-street"
authority_key = "{authority}"

[[devices]]
name = "{device}"
kind = "{device}"
url = "tcp://127.0.0.1:1502"
"""


def config(tmp_path: Path, *, meter_key: str, device: str = "meter") -> Path:
    path = tmp_path / "gridpeer.toml"
    path.write_text(CONFIG.format(meter_key=meter_key, authority="0a" * 32, device=device))
    return path


def test_flash_saves_what_the_gateway_loads_and_the_config_resolves_its_path(
    tmp_path: Path,
) -> None:
    key = bytes(range(32))
    saved = save_key(tmp_path / "keys", "home-1-meter", key)
    assert load_meter_key(saved) == key
    loaded = load_config(config(tmp_path, meter_key='meter_key_file = "keys/home-1-meter.key"'))
    assert loaded.meter_key_file == saved.resolve()
    assert load_config(config(tmp_path, meter_key="")).meter_key_file is None


def test_a_meter_key_without_a_meter_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="meter_key_file is set but there is no meter device"):
        load_config(config(tmp_path, meter_key='meter_key_file = "m.key"', device="battery"))


@pytest.mark.parametrize(
    ("text", "mode", "reason"),
    [
        (None, 0o600, "no meter key file"),
        ("00" * 32, 0o644, "readable by others (mode 644); run `chmod 600"),
        ("not hex at all", 0o600, "holds the key as hex"),
        ("00" * 8, 0o600, "must be 16..64 bytes, got 8"),
    ],
)
def test_an_unusable_meter_key_file_says_why(
    tmp_path: Path, text: str | None, mode: int, reason: str
) -> None:
    path = tmp_path / "home-1-meter.key"
    if text is not None:
        path.write_text(text + "\n")
        os.chmod(path, mode)
    with pytest.raises(IdentityError) as err:
        load_meter_key(path)
    assert str(err.value).startswith(str(path)) and reason in str(err.value)
