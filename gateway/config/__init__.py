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

from pydantic import ValidationError, model_validator

from gateway.config.home import (
    DashboardConfig,
    DcBusConfig,
    DeviceConfig,
    EnvelopeConfig,
    HomeAssistantConfig,
    PreferencesConfig,
)
from gateway.config.market import MarketConfig, TariffConfig
from gateway.config.section import NodeId, Section
from gateway.ems import Preferences
from gateway.flex_plan import parse_hhmm
from gateway.plan.grid_limits import GridConfig
from gateway.plan.planner import PlanConfig
from gateway.plan.tariff_schedule import ScheduleError

__all__ = [
    "ConfigError", "DashboardConfig", "DcBusConfig", "DeviceConfig", "EnvelopeConfig",
    "GatewayConfig", "HomeAssistantConfig", "MarketConfig", "PreferencesConfig", "TariffConfig",
    "describe_errors", "load_config", "parse_config",
]


class GatewayConfig(Section):
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
        if self.preferences.v2g_min_soc_pct is not None and "load" not in kinds:
            raise ValueError('preferences.v2g_min_soc_pct needs a charger that can feed back: '
                             'a [[devices]] entry with kind = "load"')
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
        """The owner's ``prefs`` inside the SoC window, less the bus master's headroom; the V2G
        consent is always the file's (the dashboard does not carry it)."""
        return Preferences(
            min_sell_price=prefs.min_sell_price, max_buy_price=prefs.max_buy_price,
            reserve_pct=max(prefs.reserve_pct, self.envelope.soc_min_pct + self.headroom_pct),
            soc_max_pct=self.envelope.soc_max_pct - self.headroom_pct,
            ev_ready_by_min=None if prefs.ev_ready_by is None else parse_hhmm(prefs.ev_ready_by),
            v2g_min_soc_pct=self.preferences.v2g_min_soc_pct,
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
            "preferences": config.preferences.under(market.mechanism, tariffs.tariffs()),
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
