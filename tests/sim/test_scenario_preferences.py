"""Owner preferences in a scenario: each home's [preferences] reach its gateway's config, so owners
who differ make the market's price move through the day; a bad one names its key."""

from __future__ import annotations

import tomllib

import pytest

from gateway.config import PreferencesConfig
from sim_devices.demo.community import Rules
from sim_devices.scenario import ScenarioError, parse_scenario

STREET = """
name = "test-street"
[market]
community = "test-street"
[[homes]]
name = "seller"
min_sell_price = 95
max_buy_price = 210
[[homes]]
name = "pair"
count = 2
max_buy_price = 280
[[homes]]
name = "quiet"
"""


def test_each_homes_wishes_go_into_its_gateways_preferences_the_rest_keep_the_defaults() -> None:
    rules = Rules.of(parse_scenario(tomllib.loads(STREET), source="street.toml"))
    configs = {home: tomllib.loads(rules.home_toml(home))
               for home in ("seller", "pair-1", "pair-2", "quiet")}
    assert configs["seller"]["preferences"] == {"min_sell_price": 95, "max_buy_price": 210}
    assert configs["pair-1"]["preferences"] == configs["pair-2"]["preferences"] == {
        "max_buy_price": 280}
    assert "preferences" not in configs["quiet"]
    # what the gateway reads them as
    assert PreferencesConfig(**configs["seller"]["preferences"]).min_sell_price == 95
    assert PreferencesConfig(**configs["pair-1"]["preferences"]).min_sell_price == 120


def test_a_negative_price_is_refused_with_its_key() -> None:
    raw = tomllib.loads(STREET)
    raw["homes"][0]["min_sell_price"] = -1
    with pytest.raises(ScenarioError, match="street.toml: homes.0.min_sell_price: must be >= 0"):
        parse_scenario(raw, source="street.toml")
