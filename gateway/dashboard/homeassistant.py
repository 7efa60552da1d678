"""Optional Home Assistant MQTT discovery: the home's sensors appear in HA with no configuration.

Home Assistant listens on ``homeassistant/sensor/<object_id>/config`` for retained JSON documents
describing a sensor; this module publishes one per value (retained, so HA finds them after its own
restart) and then the values together as one JSON state document on ``gridpeer/<node>/state``,
each sensor picking its field with a ``value_template``. HA usually runs its own broker, so this
link is separate from the community's peer link and may point anywhere.

``discovery_messages`` and ``state_payload`` are the sans-I/O core (status in, topics and bytes
out); ``HomeAssistantBridge`` is the aiomqtt adapter around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import aiomqtt

from gateway.dashboard.status import DashboardNode, PageStatus, StatusView

_PORTS = {"mqtt": 1883, "mqtts": 8883}
ONLINE, OFFLINE = "online", "offline"


@dataclass(frozen=True, slots=True)
class Sensor:
    """One HA sensor: ``key`` in the state document, its ``value`` read from the status."""

    key: str
    name: str
    value: Callable[[PageStatus], float | None]
    device_class: str | None
    unit: str | None
    state_class: str
    scale: float = 1.0


def sensors(*, currency: str) -> tuple[Sensor, ...]:
    """Money goes to HA in currency units (µ / 10⁶): HA's ``monetary`` class wants an ISO code."""
    power = ("power", "W", "measurement")
    return (
        Sensor("soc", "Battery state of charge", _soc, "battery", "%", "measurement"),
        Sensor("pv_power", "Solar power", lambda p: p.flows.pv_w, *power),
        Sensor("home_power", "Home power", lambda p: p.flows.home_w, *power),
        Sensor("grid_power", "Grid power (+ import)", lambda p: p.flows.grid_w, *power),
        Sensor("battery_power", "Battery power (+ charge)", lambda p: p.flows.battery_w, *power),
        Sensor("battery_setpoint", "Battery setpoint", _setpoint, *power),
        Sensor("earnings_today", "Earnings today", lambda p: p.earnings.get("today"),
               "monetary", currency, "total", scale=1e-6),
        Sensor("earnings_month", "Earnings this month", lambda p: p.earnings.get("month"),
               "monetary", currency, "total", scale=1e-6),
        Sensor("stale_devices", "Stale devices",
               lambda p: sum(1 for d in p.home.devices.values() if d.stale), None, None,
               "measurement"),
    )


def _soc(page: PageStatus) -> float | None:
    return None if page.home.battery is None else page.home.battery.soc_pct


def _setpoint(page: PageStatus) -> float | None:
    return None if page.home.battery is None else page.home.battery.setpoint_w


def state_topic(node: str) -> str:
    return f"gridpeer/{node}/state"


def availability_topic(node: str) -> str:
    return f"gridpeer/{node}/availability"


def discovery_messages(
    *, node: str, sensor_list: tuple[Sensor, ...], prefix: str = "homeassistant"
) -> list[tuple[str, bytes]]:
    """``(topic, payload)`` of every sensor's retained discovery document."""
    device = {
        "identifiers": [f"gridpeer_{node}"], "name": f"gridpeer {node}",
        "manufacturer": "gridpeer", "model": "home gateway",
    }
    messages = []
    for sensor in sensor_list:
        object_id = f"gridpeer_{node}_{sensor.key}"
        config: dict[str, Any] = {
            "name": sensor.name,
            "unique_id": object_id,
            "state_topic": state_topic(node),
            "value_template": f"{{{{ value_json.{sensor.key} }}}}",
            "availability_topic": availability_topic(node),
            "state_class": sensor.state_class,
            "device": device,
        }
        if sensor.device_class is not None:
            config["device_class"] = sensor.device_class
        if sensor.unit is not None:
            config["unit_of_measurement"] = sensor.unit
        messages.append((f"{prefix}/sensor/{object_id}/config", json.dumps(config).encode()))
    return messages


def state_payload(page: PageStatus, *, sensor_list: tuple[Sensor, ...]) -> bytes:
    """The state document; an unknown value is ``null``, which HA shows as "unknown"."""
    state: dict[str, float | None] = {}
    for sensor in sensor_list:
        value = sensor.value(page)
        state[sensor.key] = value if value is None or sensor.scale == 1.0 else value * sensor.scale
    return json.dumps(state).encode()


class HomeAssistantBridge:
    """``async with HomeAssistantBridge(node=..., broker_url=...) as ha: await ha.run()``."""

    def __init__(
        self, *, node: DashboardNode, broker_url: str, period_s: float = 10.0,
        prefix: str = "homeassistant", currency: str = "EUR", username: str | None = None,
        password: str | None = None, tls_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(broker_url)
        if parts.scheme not in _PORTS or not parts.hostname:
            raise ValueError(f"broker_url must look like mqtt://host:1883, got {broker_url!r}")
        if parts.scheme == "mqtts" and tls_context is None:
            tls_context = ssl.create_default_context()
        self._status = StatusView(node=node, max_age_s=0)  # read once per period anyway
        self._name = node.config.node
        self._period_s = period_s
        self._prefix = prefix
        self._sensors = sensors(currency=currency)
        self._client = aiomqtt.Client(
            parts.hostname, parts.port or _PORTS[parts.scheme],
            identifier=f"gridpeer-ha-{self._name}", username=username, password=password,
            tls_context=tls_context if parts.scheme == "mqtts" else None,
            will=aiomqtt.Will(availability_topic(self._name), OFFLINE, qos=1, retain=True),
        )

    async def __aenter__(self) -> Self:
        await self._status.open()
        await self._client.__aenter__()
        for topic, payload in discovery_messages(
            node=self._name, sensor_list=self._sensors, prefix=self._prefix
        ):
            await self._client.publish(topic, payload, qos=1, retain=True)
        await self._client.publish(availability_topic(self._name), ONLINE, qos=1, retain=True)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # If the link is already gone the broker publishes the last will, which says the same.
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.publish(availability_topic(self._name), OFFLINE, qos=1,
                                       retain=True)
        await self._client.__aexit__(exc_type, exc, tb)

    async def publish_state(self) -> None:
        payload = state_payload(self._status.current().page, sensor_list=self._sensors)
        await self._client.publish(state_topic(self._name), payload, qos=0, retain=True)

    async def run(self) -> None:
        """Publish the state every ``period_s`` until cancelled."""
        while True:
            await self.publish_state()
            await asyncio.sleep(self._period_s)
