"""Config errors name the key path and what is wrong, in the file owner's terms."""

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config

GOOD = """
node = "home-1"
key_file = "node.key"
certificate_file = "node.cert"
state_dir = "state"

[market]
community = "elm-street"
authority_key = "{key}"
interval_s = 900

[[devices]]
name = "battery"
kind = "battery"
url = "tcp://127.0.0.1:1502"
""".replace("{key}", "0a" * 32)


NETWORK = """
[market.network]
fee_base = 1
fee_per_km = 20

[[market.network.lines]]
bus = "trunk"
parent = "substation"
length_m = 300
capacity_w = 400000

[[market.network.lines]]
bus = "west"
parent = "trunk"
length_m = 500
capacity_w = 100000

"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gridpeer.toml"
    path.write_text(text)
    return path


def test_good_config_loads_with_defaults_and_resolved_paths(tmp_path):
    config = load_config(_write(tmp_path, GOOD))
    assert config.node == "home-1"
    assert config.key_file == (tmp_path / "node.key").resolve()
    assert config.devices[0].poll_s == 1.0
    assert config.tariffs.retail_price > config.tariffs.feed_in_price


def test_the_network_is_the_feeder_the_market_clears_on(tmp_path):
    """Line ratings become Wh per interval; the fee grows with the distance between buses."""
    config = load_config(_write(tmp_path, GOOD.replace("[[devices]]", NETWORK + "[[devices]]")))
    network = config.market.network
    assert network is not None
    feeder = network.feeder(interval_s=config.market.interval_s)
    assert {line.bus: line.capacity_wh for line in feeder.lines} == {"trunk": 100_000,
                                                                    "west": 25_000}
    assert feeder.distance_m("west", "substation") == 800
    assert network.fees().fee_per_wh(feeder.distance_m("west", "trunk")) == 1 + 20 * 500 // 1000
    assert load_config(_write(tmp_path, GOOD)).market.network is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("interval_s = 900", "interval_s = -1"),
         "market.interval_s: Input should be greater than or equal to 1"),
        (('url = "tcp://127.0.0.1:1502"', 'url = "http://x"'), "devices.0.url: scheme must be"),
        (('kind = "battery"', 'kind = "toaster"'), "devices.0.kind: Input should be"),
        (("interval_s = 900", "interval_s = 900\nintervall = 3"), "market.intervall: unknown key"),
        (('node = "home-1"', 'node = "Home 1!"'), "node: String should match pattern"),
        (("interval_s = 900", "interval_s = 30\ngate_s = 30"), "market: gate_s + grace_s must be"),
        (("interval_s = 900", 'broker = "mqtts://broker.lan:8883"'),
         "market: an mqtts:// broker needs tls_ca, tls_cert and tls_key"),
        (("interval_s = 900", 'broker = "http://broker.lan:1883"'),
         "market.broker: broker must look like mqtt://host:1883"),
        (("[[devices]]", '[homeassistant]\nbroker = "mqtt://"\n\n[[devices]]'),
         "homeassistant.broker: broker must look like mqtt://homeassistant.local"),
        (("interval_s = 900", 'tls_ca = "ca.crt"\ntls_cert = "n.crt"\ntls_key = "n.key"'),
         "market: tls_ca/tls_cert/tls_key are set but the broker is mqtt://"),
        (("[[devices]]", NETWORK.replace('parent = "trunk"', 'parent = "east"') + "[[devices]]"),
         "market.network: bus 'east' is not connected to the root 'substation'"),
        (("[[devices]]", NETWORK.replace('parent = "substation"', 'parent = "west"')
          + "[[devices]]"), "market.network: the feeder has a loop through bus 'trunk'"),
        (("[[devices]]", NETWORK.replace("capacity_w = 100000", "capacity_w = 0")
          + "[[devices]]"), "market.network.lines.1.capacity_w: Input should be greater than 0"),
        (("[[devices]]", NETWORK.replace("fee_per_km = 20", "fee_per_km = -1")
          + "[[devices]]"), "market.network.fee_per_km: Input should be greater than or equal"),
    ],
)
def test_bad_config_names_the_key(tmp_path, change, expected):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, GOOD.replace(*change)))
    assert expected in str(err.value)
    assert str(err.value).startswith(str(tmp_path / "gridpeer.toml"))


def test_tls_files_are_taken_from_the_config_folder(tmp_path):
    text = GOOD.replace("interval_s = 900", 'broker = "mqtts://broker.lan:8883"\n'
                        'tls_ca = "tls/ca.crt"\ntls_cert = "tls/home-1.crt"\n'
                        'tls_key = "tls/home-1.key"')
    market = load_config(_write(tmp_path, text)).market
    assert market.tls_ca == (tmp_path / "tls" / "ca.crt").resolve()
    assert market.tls_key == (tmp_path / "tls" / "home-1.key").resolve()


def test_broken_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "node = "))
    with pytest.raises(ConfigError, match="gridpeer init"):
        load_config(tmp_path / "absent.toml")
