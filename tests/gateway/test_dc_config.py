"""A converter's config: the bus master and window every member must name, or a clear error."""

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config

DC = """
node = "home-2"
key_file = "node.key"
certificate_file = "node.cert"
state_dir = "state"

[market]
community = "dc-street"
authority_key = "{key}"

[envelope]
converter_max_a = 10
bus_v_min = 320
bus_v_max = 380

[dc_bus]
master = "home-1"
voltage_v = 350

[[devices]]
name = "battery"
kind = "battery"
url = "tcp://127.0.0.1:1502"

[[devices]]
name = "dcdc"
kind = "dcdc"
url = "tcp://127.0.0.1:1503"
""".replace("{key}", "0a" * 32)


def _load(tmp_path: Path, text: str):
    path = tmp_path / "gridpeer.toml"
    path.write_text(text)
    return load_config(path)


def test_converter_config_loads(tmp_path):
    config = _load(tmp_path, DC)
    assert config.dc_bus is not None and config.dc_bus.master == "home-1"
    assert (config.envelope.converter_max_a, config.envelope.bus_v_min) == (10, 320)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('master = "home-1"\nvoltage_v = 350\n', 'voltage_v = 350\n'),
         "dc_bus.master: Field required"),
        (("[dc_bus]\nmaster", "[ignored]\nmaster"), "ignored: unknown key"),
        (("voltage_v = 350", "voltage_v = 390"), "dc_bus.voltage_v 390 V must be inside"),
        (("bus_v_min = 320", "bus_v_min = 400"), "envelope: bus_v_min must be below bus_v_max"),
        (("converter_max_a = 10", "converter_max_a = 0"),
         "envelope.converter_max_a: Input should be greater than 0"),
        (('kind = "battery"', 'kind = "meter"'), "a dcdc device needs a battery device"),
        (('name = "dcdc"\nkind = "dcdc"', 'name = "pv"\nkind = "pv"'),
         "dc_bus is set but there is no dcdc device"),
        (('[[devices]]\nname = "dcdc"', '[[devices]]\nname = "dcdc-2"\nkind = "dcdc"\n'
          'url = "tcp://127.0.0.1:1504"\n\n[[devices]]\nname = "dcdc"'),
         "at most one dcdc per gateway"),
    ],
)
def test_bad_converter_config_says_what_is_wrong(tmp_path, change, expected):
    assert change[0] in DC
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, DC.replace(*change))
    assert expected in str(err.value)


def test_a_converter_without_a_bus_master_is_refused(tmp_path):
    text = DC.replace('[dc_bus]\nmaster = "home-1"\nvoltage_v = 350\n', "")
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert "a dcdc device needs [dc_bus] with the bus master's node id" in str(err.value)
