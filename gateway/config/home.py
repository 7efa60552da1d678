"""The config's home sections: its devices (``[[devices]]``), the safety envelope, the DC bus,
the owner's preferences, the dashboard and Home Assistant."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from gateway.config.section import NodeId, Section, mqtt_url
from gateway.envelope import BatteryEnvelope, ConverterEnvelope
from protocols.clearing import POOLS, Tariffs
from protocols.messages import MAX_PRICE


class DeviceConfig(Section):
    """One Modbus device. ``url`` is ``tcp://host:port`` or ``rtu:///dev/ttyUSB0?baud=9600``."""

    name: NodeId
    kind: Literal["meter", "pv", "battery", "dcdc", "load"]
    """``load``: a controllable load (EV charger, appliance; vendor model 64220), any number."""
    url: str
    unit: int = Field(default=1, ge=1, le=247)
    poll_s: float = Field(default=1.0, ge=0.01, le=3600)
    """The fastest device's poll period is the control period too: at least 10 ms."""
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    first_timeout_s: float | None = Field(default=None, gt=0, le=120)
    """The wait for a new link's first answer (a Modbus stack waking, a TCP-to-RS-485 gateway
    opening its line); None: ``timeout_s``."""
    stale_after: int = Field(default=3, ge=1, le=100)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme == "tcp":
            if not parts.hostname or parts.port is None:
                raise ValueError("tcp URL needs host and port, e.g. tcp://192.168.1.20:502")
        elif parts.scheme == "rtu":
            if not parts.path:
                raise ValueError("rtu URL needs a device path, e.g. rtu:///dev/ttyUSB0?baud=9600")
        else:
            raise ValueError(f"scheme must be tcp:// or rtu://, got {parts.scheme or 'none'}")
        return v

    @model_validator(mode="after")
    def _first_answer(self) -> DeviceConfig:
        if self.first_timeout_s is not None and self.first_timeout_s < self.timeout_s:
            raise ValueError(f"first_timeout_s ({self.first_timeout_s:g} s) must be at least "
                             f"timeout_s ({self.timeout_s:g} s): it is the longer wait")
        return self


class PreferencesConfig(Section):
    """The owner's wishes; prices in µ/Wh, clamped to the tariffs when bids are made.

    The price wishes an owner leaves unset depend on the community's mechanism
    (:meth:`under`): 120 and 250 where members bid prices, the tariffs under a pool.
    """

    min_sell_price: int = Field(default=120, ge=0, le=MAX_PRICE)
    max_buy_price: int = Field(default=250, ge=0, le=MAX_PRICE)
    reserve_pct: float = Field(default=20, ge=0, le=100)
    ev_ready_by: str | None = Field(default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    v2g_min_soc_pct: float | None = Field(default=None, ge=0, le=100)
    """The owner's consent to V2G and the car's floor (None: the car only charges). Set in the
    file only: the dashboard's preferences leave it as the file says."""

    def under(self, mechanism: str, tariffs: Tariffs) -> PreferencesConfig:
        """These wishes in a community clearing by ``mechanism``: under a pool (``mmr``,
        ``sdr``, ``bill-sharing``) a price the owner left unset is the tariff (sell at no less
        than feed-in, buy at no more than retail), what the owner's energy earns or costs at the
        grid anyway.

        A pool's price is a formula between feed-in and retail, not a meeting of offers: at a
        wish inside the tariffs an owner sits out every interval whose formula price falls
        outside it (bill sharing prices at retail whenever the street is short), and the pool
        trades little or nothing. The values the owner set are kept as set.
        """
        if mechanism not in POOLS:
            return self
        grid = {"min_sell_price": tariffs.feed_in_price, "max_buy_price": tariffs.retail_price}
        unset = {name: price for name, price in grid.items() if name not in self.model_fields_set}
        return self.model_copy(update=unset)


_MAX_POWER_W = 1_000_000
"""A megawatt: past any home battery, and an hour of it is the most a bid may carry."""


class EnvelopeConfig(Section):
    """Hard limits the dispatcher never crosses, whatever the market cleared."""

    soc_min_pct: float = Field(default=10, ge=0, le=100)
    soc_max_pct: float = Field(default=95, ge=0, le=100)
    max_charge_w: int = Field(default=5000, ge=0, le=_MAX_POWER_W)
    max_discharge_w: int = Field(default=5000, ge=0, le=_MAX_POWER_W)
    ramp_w_per_s: float = Field(default=1000, gt=0)
    revert_s: int = Field(default=60, ge=5, le=3600)
    converter_max_a: float = Field(default=20, gt=0)
    """DC-DC converter current at the bus side, either direction (with a ``dcdc`` device)."""
    bus_v_min: float = Field(default=320, gt=0)
    bus_v_max: float = Field(default=380, gt=0)
    """The DC bus window: outside it no converter runs (except the master restoring the bus)."""
    master_headroom_pct: float = Field(default=5, ge=0, le=25)
    """The bus master keeps its battery this far inside the SoC window on the AC side, so its
    converter can always absorb the bus's residual both ways."""

    @model_validator(mode="after")
    def _window(self) -> EnvelopeConfig:
        if self.soc_min_pct >= self.soc_max_pct:
            raise ValueError("soc_min_pct must be below soc_max_pct")
        if self.bus_v_min >= self.bus_v_max:
            raise ValueError("bus_v_min must be below bus_v_max")
        if self.soc_min_pct + 2 * self.master_headroom_pct >= self.soc_max_pct:
            raise ValueError("master_headroom_pct leaves the bus master no SoC window")
        return self

    def battery(self) -> BatteryEnvelope:
        return BatteryEnvelope(**self.model_dump(include={
            "soc_min_pct", "soc_max_pct", "max_charge_w", "max_discharge_w", "ramp_w_per_s"}))

    def converter(self) -> ConverterEnvelope:
        return ConverterEnvelope(max_current_a=self.converter_max_a, bus_v_min=self.bus_v_min,
                                 bus_v_max=self.bus_v_max)


class DcBusConfig(Section):
    """The community's DC bus. Every member's gateway names the same ``master``: the one whose
    converter holds the bus voltage (CV) while the others inject or draw their traded energy."""

    master: NodeId
    voltage_v: float = Field(default=350, gt=0)


HostName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?$")]


class DashboardConfig(Section):
    """The local web page, JSON API and /metrics. Loopback by default: open it to the home
    network (host = "0.0.0.0") only behind the router, never to the internet."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    allowed_hosts: tuple[HostName, ...] = ()
    """Names the dashboard answers to besides localhost, the Pi's host name (and NAME.local) and
    IP addresses, e.g. a router's DNS name ``["solar.home.arpa"]``; any other Host is refused."""


class HomeAssistantConfig(Section):
    """Optional MQTT discovery so the home's sensors appear in Home Assistant by themselves."""

    broker: str
    username: str | None = None
    password: str | None = None
    period_s: float = Field(default=10, gt=0)
    prefix: str = "homeassistant"

    @field_validator("broker")
    @classmethod
    def _broker(cls, v: str) -> str:
        return mqtt_url(v, example="mqtt://homeassistant.local:1883")
