"""Gateway configuration: one TOML file, validated once at the edge, then passed around frozen.

Every error names the key path (``market.gate_s``) and what is wrong with it, because the person
reading it is a homeowner or installer looking at their own file, not a Python developer.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NodeId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeviceConfig(_Model):
    """One Modbus device. ``url`` is ``tcp://host:port`` or ``rtu:///dev/ttyUSB0?baud=9600``."""

    name: NodeId
    kind: Literal["meter", "pv", "battery", "dcdc"]
    url: str
    unit: int = Field(default=1, ge=1, le=247)
    poll_s: float = Field(default=1.0, gt=0, le=3600)
    timeout_s: float = Field(default=1.0, gt=0, le=60)
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


class MarketConfig(_Model):
    """Interval timing and the community's rules (every member must use the same values)."""

    community: NodeId
    broker: str = "mqtt://127.0.0.1:1883"
    authority_key: str = Field(pattern=r"^[0-9a-f]{64}$", description="authority public key, hex")
    mechanism: Literal["uniform", "trade-reduction", "mmr", "sdr", "bill-sharing", "cda"] = (
        "uniform"
    )
    interval_s: float = Field(default=900, gt=0)
    gate_s: float = Field(default=60, ge=0)
    grace_s: float = Field(default=10, ge=0)
    epoch_ms: int = Field(default=0, ge=0)
    quorum_num: int = Field(default=2, ge=1)
    quorum_den: int = Field(default=3, ge=1)

    @field_validator("broker")
    @classmethod
    def _broker(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("broker must look like mqtt://host:1883 or mqtts://host:8883")
        return v

    @model_validator(mode="after")
    def _timing(self) -> MarketConfig:
        if self.gate_s + self.grace_s >= self.interval_s:
            raise ValueError("gate_s + grace_s must be shorter than interval_s")
        if self.quorum_num > self.quorum_den:
            raise ValueError("quorum_num must not exceed quorum_den")
        return self


class TariffConfig(_Model):
    """Grid tariffs in µ/Wh (0.30 €/kWh = 300)."""

    retail_price: int = Field(default=300, gt=0)
    feed_in_price: int = Field(default=80, ge=0)

    @model_validator(mode="after")
    def _order(self) -> TariffConfig:
        if self.feed_in_price >= self.retail_price:
            raise ValueError("feed_in_price must be below retail_price")
        return self


class PreferencesConfig(_Model):
    """The owner's wishes; prices in µ/Wh, clamped to the tariffs when bids are made."""

    min_sell_price: int = Field(default=120, ge=0)
    max_buy_price: int = Field(default=250, ge=0)
    reserve_pct: float = Field(default=20, ge=0, le=100)
    ev_ready_by: str | None = Field(default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")


class EnvelopeConfig(_Model):
    """Hard limits the dispatcher never crosses, whatever the market cleared."""

    soc_min_pct: float = Field(default=10, ge=0, le=100)
    soc_max_pct: float = Field(default=95, ge=0, le=100)
    max_charge_w: int = Field(default=5000, ge=0)
    max_discharge_w: int = Field(default=5000, ge=0)
    ramp_w_per_s: float = Field(default=1000, gt=0)
    revert_s: int = Field(default=60, ge=5, le=3600)

    @model_validator(mode="after")
    def _window(self) -> EnvelopeConfig:
        if self.soc_min_pct >= self.soc_max_pct:
            raise ValueError("soc_min_pct must be below soc_max_pct")
        return self


class DashboardConfig(_Model):
    """The local web page, JSON API and /metrics. Loopback by default: open it to the home
    network (host = "0.0.0.0") only behind the router, never to the internet."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)


class HomeAssistantConfig(_Model):
    """Optional MQTT discovery so the home's sensors appear in Home Assistant by themselves."""

    broker: str
    username: str | None = None
    password: str | None = None
    period_s: float = Field(default=10, gt=0)
    prefix: str = "homeassistant"

    @field_validator("broker")
    @classmethod
    def _broker(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("broker must look like mqtt://homeassistant.local:1883")
        return v


class GatewayConfig(_Model):
    node: NodeId
    key_file: Path
    certificate_file: Path
    state_dir: Path
    market: MarketConfig
    tariffs: TariffConfig = TariffConfig()
    preferences: PreferencesConfig = PreferencesConfig()
    envelope: EnvelopeConfig = EnvelopeConfig()
    dashboard: DashboardConfig = DashboardConfig()
    homeassistant: HomeAssistantConfig | None = None
    devices: tuple[DeviceConfig, ...] = ()

    @model_validator(mode="after")
    def _devices(self) -> GatewayConfig:
        names = [d.name for d in self.devices]
        if len(names) != len(set(names)):
            raise ValueError("device names must be unique")
        kinds = [d.kind for d in self.devices]
        for kind in ("meter",):
            if kinds.count(kind) > 1:
                raise ValueError(f"at most one {kind} per gateway")
        return self


class ConfigError(Exception):
    """A config file that cannot be used; ``str()`` lists every problem with its key path."""


def load_config(path: Path) -> GatewayConfig:
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (make one with `gridpeer init`)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, source=str(path), base=path.parent)


def parse_config(raw: dict[str, object], *, source: str, base: Path) -> GatewayConfig:
    """Validate a parsed TOML table; relative paths are taken from the config file's folder."""
    try:
        config = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, source=source)) from None
    return config.model_copy(
        update={
            name: (base / getattr(config, name)).resolve()
            for name in ("key_file", "certificate_file", "state_dir")
        }
    )


def describe_errors(exc: ValidationError, *, source: str) -> str:
    """``source: key.path: message`` lines, one per problem, in the config file's own words."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        lines.append(f"{source}: {path}: {msg}")
    return "\n".join(lines)
