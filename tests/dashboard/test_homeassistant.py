"""Home Assistant discovery on a real broker, read back by an independent MQTT client."""

import asyncio
import contextlib
import json
from urllib.parse import urlsplit

import aiomqtt

from gateway.dashboard.homeassistant import HomeAssistantBridge
from sim_devices.demo.broker import EmbeddedBroker
from tests.dashboard.community import DEMO_HOMES, community

KEYS = {"soc", "pv_power", "home_power", "grid_power", "battery_power", "battery_setpoint",
        "earnings_today", "earnings_month", "stale_devices"}


@contextlib.asynccontextmanager
async def listener(url: str, *topics: str):
    parts = urlsplit(url)
    async with aiomqtt.Client(parts.hostname, parts.port, identifier="ha-test") as client:
        for topic in topics:
            await client.subscribe(topic, qos=1)
        yield client


async def collect(client: aiomqtt.Client, *, until, timeout_s: float = 10.0):
    seen: list[aiomqtt.Message] = []
    async with asyncio.timeout(timeout_s):
        async for message in client.messages:
            seen.append(message)
            if until(seen):
                return seen
    raise AssertionError("unreachable")


async def test_sensors_are_discovered_retained_and_their_states_update(tmp_path):
    # Home Assistant's broker is not the community's: a second embedded broker plays it
    async with EmbeddedBroker() as ha_broker, community(tmp_path, homes=DEMO_HOMES[:1]) as nodes:
        node = nodes["home-1"]
        async with HomeAssistantBridge(node=node, broker_url=ha_broker.url, period_s=0.2) as ha:
            # a client that connects afterwards (Home Assistant restarting) still finds them
            async with listener(ha_broker.url, "homeassistant/#",
                                "gridpeer/home-1/availability") as client:
                seen = await collect(client, until=lambda s: len(s) == len(KEYS) + 1)
            configs = {}
            for message in seen:
                assert message.retain, message.topic
                if message.topic.matches("gridpeer/home-1/availability"):
                    assert message.payload == b"online"
                    continue
                config = json.loads(message.payload)
                configs[str(message.topic)] = config
            assert set(configs) == {f"homeassistant/sensor/gridpeer_home-1_{k}/config"
                                    for k in KEYS}
            soc = configs["homeassistant/sensor/gridpeer_home-1_soc/config"]
            assert soc["device_class"] == "battery" and soc["unit_of_measurement"] == "%"
            assert soc["unique_id"] == "gridpeer_home-1_soc"
            assert soc["state_topic"] == "gridpeer/home-1/state"
            assert soc["value_template"] == "{{ value_json.soc }}"
            assert soc["device"]["identifiers"] == ["gridpeer_home-1"]
            grid = configs["homeassistant/sensor/gridpeer_home-1_grid_power/config"]
            assert (grid["device_class"], grid["unit_of_measurement"]) == ("power", "W")
            money = configs["homeassistant/sensor/gridpeer_home-1_earnings_today/config"]
            assert (money["device_class"], money["unit_of_measurement"]) == ("monetary", "EUR")

            async with listener(ha_broker.url, "gridpeer/home-1/state") as client:
                publisher = asyncio.create_task(ha.run())
                try:
                    states = await collect(client, until=lambda s: len(
                        {m.payload for m in s}) >= 3)
                finally:
                    publisher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await publisher
        for message in states:
            state = json.loads(message.payload)
            assert set(state) == KEYS
            assert 0 <= state["soc"] <= 100 and state["stale_devices"] == 0
            assert state["home_power"] == (state["grid_power"] - state["battery_power"]
                                           + state["pv_power"])
        # leaving says so, retained, so Home Assistant greys the sensors out
        async with listener(ha_broker.url, "gridpeer/home-1/availability") as client:
            [message] = await collect(client, until=lambda s: len(s) == 1)
        assert message.payload == b"offline" and message.retain
