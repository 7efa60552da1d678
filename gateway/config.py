"""Gateway configuration: one TOML file, validated once at the edge, then passed around frozen;
its sections give the domain objects they configure (``market.timing()``, ...).

Every error names the key path (``market.gate_s``) and what is wrong with it, because the person
reading it is a homeowner or installer looking at their own file, not a Python developer. A value
the gateway cannot run on is refused here, never later: no number in the file is infinite or NaN
(TOML allows both), and the market's timing and quorum are checked as the market will use them.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.ems import Preferences
from gateway.envelope import BatteryEnvelope, ConverterEnvelope
from gateway.flex_plan import parse_hhmm
from gateway.plan.grid_limits import GridConfig
from gateway.plan.planner import PlanConfig
from gateway.plan.tariff_file import load_schedule
from gateway.plan.tariff_schedule import ScheduleError, TariffSchedule
from gateway.tls import TlsFiles
from protocols.clearing import Tariffs
from protocols.keycheck import key_problem
from protocols.market import Timing
from protocols.messages import MAX_PRICE
from protocols.network import Feeder, FeeSchedule, Line, NetworkError

NodeId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class DeviceConfig(_Model):
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


class FeederLineConfig(_Model):
    """The line from ``bus`` up to ``parent`` (towards the substation), rated ``capacity_w``."""

    bus: NodeId
    parent: NodeId
    length_m: int = Field(ge=0)
    capacity_w: int = Field(gt=0)


class NetworkConfig(_Model):
    """The community's radial feeder and network fee (``[market.network]``).

    Every member configures the same: each gateway curtails a clearing that would overload a line
    at the margin and charges each trade ``fee_base + fee_per_km × distance`` µ/Wh, and the hash
    they agree on covers both. The certificates name each member's bus.
    """

    root: NodeId = "substation"
    lines: tuple[FeederLineConfig, ...] = Field(min_length=1)
    fee_base: int = Field(default=0, ge=0)
    fee_per_km: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _radial(self) -> NetworkConfig:
        try:
            self.feeder(interval_s=3600)
        except NetworkError as exc:
            raise ValueError(str(exc)) from None
        return self

    def feeder(self, *, interval_s: float) -> Feeder:
        """The feeder as the market clears on it: each line's rating as Wh per interval."""
        return Feeder(root=self.root, lines=[
            Line.rated(bus=ln.bus, parent=ln.parent, length_m=ln.length_m,
                       capacity_w=ln.capacity_w, interval_s=interval_s)
            for ln in self.lines])

    def fees(self) -> FeeSchedule:
        return FeeSchedule(base=self.fee_base, per_km=self.fee_per_km)


class MarketConfig(_Model):
    """Interval timing and the community's rules (every member must use the same values)."""

    community: NodeId
    broker: str = "mqtt://127.0.0.1:1883"
    authority_key: str = Field(pattern=r"^[0-9a-f]{64}$", description="authority public key, hex")
    mechanism: Literal["uniform", "trade-reduction", "mmr", "sdr", "bill-sharing", "cda"] = (
        "uniform"
    )
    interval_s: float = Field(default=900, ge=1, le=86_400)
    gate_s: float = Field(default=60, ge=0.001)
    grace_s: float = Field(default=10, ge=0.001)
    epoch_ms: int = Field(default=0, ge=0)
    quorum_num: int = Field(default=2, ge=1)
    quorum_den: int = Field(default=3, ge=1)
    tls_ca: Path | None = None
    """The community CA (PEM) that signed the broker's certificate; with ``mqtts://`` only."""
    tls_cert: Path | None = None
    """This node's client certificate (PEM): its Common Name is the node id the broker's ACL
    lets it publish under (``gridpeer community broker-config`` issues it)."""
    tls_key: Path | None = None
    network: NetworkConfig | None = None
    """The feeder and network fee; without it the community clears as if on one bus, free."""

    @field_validator("authority_key")
    @classmethod
    def _authority_key(cls, v: str) -> str:
        weak = key_problem(v)
        if weak is not None:
            raise ValueError(f"authority_key is {weak}: not a usable Ed25519 public key (use the "
                             "one `gridpeer community init` printed)")
        return v

    @field_validator("broker")
    @classmethod
    def _broker(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("broker must look like mqtt://host:1883 or mqtts://host:8883")
        return v

    def timing(self) -> Timing:
        return Timing(epoch_ms=self.epoch_ms, length_ms=_ms(self.interval_s),
                      gate_ms=_ms(self.gate_s), grace_ms=_ms(self.grace_s))

    def tls(self) -> TlsFiles | None:  # an mqtts:// broker's, validated to come as three
        if self.tls_ca is None or self.tls_cert is None or self.tls_key is None:
            return None
        return TlsFiles(ca=self.tls_ca, cert=self.tls_cert, key=self.tls_key)

    @model_validator(mode="after")
    def _timing(self) -> MarketConfig:
        if _ms(self.gate_s) <= _ms(self.grace_s):
            raise ValueError(f"gate_s ({self.gate_s:g} s) must be longer than grace_s "
                             f"({self.grace_s:g} s): clearing runs grace_s after the gate, and "
                             "the rest of gate_s is for the quorum to agree before the interval")
        if self.gate_s + self.grace_s >= self.interval_s:
            raise ValueError("gate_s + grace_s must be shorter than interval_s")
        if not self.quorum_den < 2 * self.quorum_num <= 2 * self.quorum_den:
            raise ValueError(f"quorum_num/quorum_den must be more than 1/2 and at most 1, got "
                             f"{self.quorum_num}/{self.quorum_den}: two results could otherwise "
                             "both reach a quorum")
        tls = (self.tls_ca, self.tls_cert, self.tls_key)
        if self.broker.startswith("mqtts://") and None in tls:
            raise ValueError("an mqtts:// broker needs tls_ca, tls_cert and tls_key")
        if self.broker.startswith("mqtt://") and tls != (None, None, None):
            raise ValueError("tls_ca/tls_cert/tls_key are set but the broker is mqtt://: "
                             "use mqtts:// so the link is encrypted")
        return self


class TariffConfig(_Model):
    """Grid tariffs in µ/Wh (0.30 €/kWh = 300)."""

    retail_price: int = Field(default=300, gt=0, le=MAX_PRICE)
    feed_in_price: int = Field(default=80, ge=0, le=MAX_PRICE)
    schedule: Path | None = None
    """A time-of-use or day-ahead tariff file (``.csv`` or ``.toml``): the home's plan prices
    each interval with it, the fixed prices above apply where it says nothing."""

    @model_validator(mode="after")
    def _order(self) -> TariffConfig:
        if self.feed_in_price >= self.retail_price:
            raise ValueError("feed_in_price must be below retail_price")
        return self

    def tariffs(self) -> Tariffs:
        return Tariffs(retail_price=self.retail_price, feed_in_price=self.feed_in_price)

    def tariff_schedule(self) -> TariffSchedule:
        """The prices through the day (``ScheduleError`` if the file cannot be used)."""
        return load_schedule(self.schedule, fixed=self.tariffs())


class PreferencesConfig(_Model):
    """The owner's wishes; prices in µ/Wh, clamped to the tariffs when bids are made."""

    min_sell_price: int = Field(default=120, ge=0, le=MAX_PRICE)
    max_buy_price: int = Field(default=250, ge=0, le=MAX_PRICE)
    reserve_pct: float = Field(default=20, ge=0, le=100)
    ev_ready_by: str | None = Field(default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")


_MAX_POWER_W = 1_000_000
"""A megawatt: past any home battery, and an hour of it is the most a bid may carry."""


class EnvelopeConfig(_Model):
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


class DcBusConfig(_Model):
    """The community's DC bus. Every member's gateway names the same ``master``: the one whose
    converter holds the bus voltage (CV) while the others inject or draw their traded energy."""

    master: NodeId
    voltage_v: float = Field(default=350, gt=0)


HostName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?$")]


class DashboardConfig(_Model):
    """The local web page, JSON API and /metrics. Loopback by default: open it to the home
    network (host = "0.0.0.0") only behind the router, never to the internet."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    allowed_hosts: tuple[HostName, ...] = ()
    """Names the dashboard answers to besides localhost, the Pi's host name (and NAME.local) and
    IP addresses, e.g. a router's DNS name ``["solar.home.arpa"]``; any other Host is refused."""


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
    meter_key_file: Path | None = None
    """The HMAC key the meter tags its readings with (``gridpeer flash`` writes it, hex, mode
    600): the gateway checks its own meter's readings with it before settling on them."""
    market: MarketConfig
    tariffs: TariffConfig = TariffConfig()
    plan: PlanConfig = PlanConfig()
    grid: GridConfig | None = None
    """The grid operator's limits at the home's connection point (export, import, dimming)."""
    preferences: PreferencesConfig = PreferencesConfig()
    envelope: EnvelopeConfig = EnvelopeConfig()
    dashboard: DashboardConfig = DashboardConfig()
    homeassistant: HomeAssistantConfig | None = None
    dc_bus: DcBusConfig | None = None
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
        if self.meter_key_file is not None and "meter" not in kinds:
            raise ValueError("meter_key_file is set but there is no meter device to check")
        self._dc_bus(kinds)
        return self

    @property
    def dc_master(self) -> bool:
        """Whether this node's converter holds the DC bus (every member's config names it)."""
        return self.dc_bus is not None and self.dc_bus.master == self.node

    @property
    def headroom_pct(self) -> float:
        """How far inside the SoC window the bus master keeps its battery (0 if not master)."""
        return self.envelope.master_headroom_pct if self.dc_master else 0.0

    def plan_preferences(self, prefs: PreferencesConfig) -> Preferences:
        """The owner's ``prefs`` inside the SoC window, less the bus master's headroom."""
        return Preferences(
            min_sell_price=prefs.min_sell_price, max_buy_price=prefs.max_buy_price,
            reserve_pct=max(prefs.reserve_pct, self.envelope.soc_min_pct + self.headroom_pct),
            soc_max_pct=self.envelope.soc_max_pct - self.headroom_pct,
            ev_ready_by_min=None if prefs.ev_ready_by is None else parse_hhmm(prefs.ev_ready_by),
        )

    def _dc_bus(self, kinds: Sequence[str]) -> None:
        """A converter trades over the bus only with a battery behind it and a named master."""
        if "dcdc" not in kinds:
            if self.dc_bus is not None:
                raise ValueError("dc_bus is set but there is no dcdc device")
            return
        if kinds.count("dcdc") > 1:
            raise ValueError("at most one dcdc per gateway")
        if "battery" not in kinds:
            raise ValueError("a dcdc device needs a battery device: its port is the battery")
        if self.dc_bus is None:
            raise ValueError("a dcdc device needs [dc_bus] with the bus master's node id")
        env = self.envelope
        if not env.bus_v_min < self.dc_bus.voltage_v < env.bus_v_max:
            raise ValueError(f"dc_bus.voltage_v {self.dc_bus.voltage_v:g} V must be inside the "
                             f"envelope's bus window ({env.bus_v_min:g}, {env.bus_v_max:g}) V")


def _ms(seconds: float) -> int:
    """A duration of the config in the milliseconds the market counts in (as it rounds them)."""
    return int(seconds * 1000)


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
    market = config.market
    tls = {name: (base / path).resolve() for name in ("tls_ca", "tls_cert", "tls_key")
           if (path := getattr(market, name)) is not None}
    tariffs = config.tariffs
    if tariffs.schedule is not None:
        tariffs = tariffs.model_copy(update={"schedule": (base / tariffs.schedule).resolve()})
        try:
            tariffs.tariff_schedule()
        except ScheduleError as exc:
            raise ConfigError("\n".join(f"{source}: tariffs.schedule: {line}"
                                         for line in str(exc).splitlines())) from None
    return config.model_copy(
        update={
            **{name: (base / getattr(config, name)).resolve()
               for name in ("key_file", "certificate_file", "state_dir")},
            **({} if config.meter_key_file is None
               else {"meter_key_file": (base / config.meter_key_file).resolve()}),
            "market": market.model_copy(update=tls),
            "tariffs": tariffs,
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
