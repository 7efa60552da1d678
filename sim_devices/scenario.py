"""Scenario files: a whole simulated community in one TOML file, validated once at the edge.

A scenario says who lives on the street (homes, their devices and profile parameters, an optional
EV and DC-DC converter), what the grid charges, how the market runs, how the homes hang on the
feeder and the DC bus, and what goes wrong with which device. ``load_scenario`` turns a file, or
the name of a shipped one (``sim_devices/scenarios/*.toml``), into a frozen ``Scenario``; every
problem is reported with its key path (``homes.3.battery_wh: must be > 0``), because the reader
is an engineer looking at their own file. ``Scenario.world()`` then builds the simulated world.

Indexes in key paths count from 0, as the entries of a TOML array of tables appear in the file.
A ``[[homes]]`` entry with ``count = N`` stands for N alike homes named ``<name>-1`` ..
``<name>-N``; each still gets its own weather and load noise from the world seed and its name.
"""

from __future__ import annotations

import re
import tomllib
from datetime import time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocols.messages import MAX_PRICE
from protocols.network import FeeSchedule
from sim_devices.dcbus import ConverterSpec, DcBusSpec
from sim_devices.ev import EvSpec
from sim_devices.faults import FaultSpec
from sim_devices.feeder import FeederLine, RadialFeeder
from sim_devices.home import HomeSpec
from sim_devices.world import World

__all__ = ["Scenario", "ScenarioError", "load_scenario", "parse_scenario", "shipped_scenarios"]

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
"""Home, bus and scenario names: the gateway's node id rules, so a home can be a gateway's node."""
Role = Literal["meter", "pv", "battery", "dcdc", "ev", "flex"]

_SHIPPED = "scenarios"
_TARIFF_FILE = r"^([A-Za-z0-9_-]+/)?[A-Za-z0-9_-][A-Za-z0-9_.-]*\.(csv|toml)$"


class ScenarioError(ValueError):
    """A scenario that cannot be used; ``str()`` has one ``source: key.path: problem`` per line."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TariffsModel(_Model):
    """Grid tariffs in µ/Wh (0.30 per kWh = 300). ``schedule`` is a time-of-use or day-ahead
    tariff file (``.csv``/``.toml``, in the scenario's folder or one below it, as the shipped
    ``tariffs/``) every home plans with and the community clears and settles at, as each
    gateway's ``[tariffs] schedule``; the fixed prices fill what it leaves out."""

    retail_price: int = Field(default=300, gt=0)
    feed_in_price: int = Field(default=80, ge=0)
    schedule: str | None = None

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, name: str | None) -> str | None:
        if name is not None and not re.match(_TARIFF_FILE, name):
            raise ValueError(f"{name!r} must be a .csv or .toml file in the scenario's folder "
                             "or one folder below it (\"tariffs/prices.toml\")")
        return name

    @model_validator(mode="after")
    def _order(self) -> TariffsModel:
        if self.feed_in_price >= self.retail_price:
            raise ValueError("feed_in_price must be below retail_price")
        return self


class MarketModel(_Model):
    """The community's market rules, as every gateway in a run of this scenario must use them."""

    community: Name
    mechanism: Literal["uniform", "trade-reduction", "mmr", "sdr", "bill-sharing", "cda"] = (
        "uniform")
    interval_s: int = Field(default=900, gt=0)
    gate_s: int = Field(default=60, ge=0)
    grace_s: int = Field(default=10, ge=0)
    fee_base: int = Field(default=0, ge=0)
    """Network fee in µ/Wh on every trade, with a feeder (``protocols.network.FeeSchedule``)..."""
    fee_per_km: int = Field(default=0, ge=0)
    """... plus this much per km of feeder between the buyer's and the seller's buses."""

    def fees(self) -> FeeSchedule:
        return FeeSchedule(base=self.fee_base, per_km=self.fee_per_km)

    @model_validator(mode="after")
    def _timing(self) -> MarketModel:
        if self.gate_s + self.grace_s >= self.interval_s:
            raise ValueError("gate_s + grace_s must be shorter than interval_s")
        return self


class FaultsModel(_Model):
    """What goes wrong with one served device (``sim_devices/faults.py``).

    ``offline`` windows are simulated seconds since midnight of day 0, like the world's clock;
    ``delay_s`` is real seconds, because the client waits in real time.
    """

    drop_p: float = Field(default=0.0, ge=0, le=1)
    corrupt_p: float = Field(default=0.0, ge=0, le=1)
    delay_s: float = Field(default=0.0, ge=0)
    jitter_s: float = Field(default=0.0, ge=0)
    offline: tuple[tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]], ...] = ()

    @field_validator("offline")
    @classmethod
    def _windows(cls, windows: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        for i, (start, end) in enumerate(windows):
            if not start < end:
                raise ValueError(f"window {i} [{start}, {end}] must have start < end")
        return windows

    def spec(self) -> FaultSpec:
        return FaultSpec(drop_p=self.drop_p, corrupt_p=self.corrupt_p, delay_s=self.delay_s,
                         jitter_s=self.jitter_s, offline=self.offline)


class EvModel(_Model):
    """An electric vehicle charging at home (``sim_devices/ev.py``)."""

    battery_wh: int = Field(gt=0)
    max_charge_w: int = Field(gt=0)
    arrival_h: float = Field(default=18.0, ge=0, lt=24)
    departure_h: float = Field(default=7.5, ge=0, lt=24)
    arrival_soc_pct: float = Field(default=40.0, ge=0, le=100)
    target_soc_pct: float = Field(default=90.0, ge=0, le=100)
    charge_efficiency: float = Field(default=0.92, gt=0, le=1)
    max_discharge_w: int = Field(default=0, ge=0, le=65534)
    """A bidirectional (V2G) charger's most power fed back from the car; 0: it only charges."""

    @model_validator(mode="after")
    def _physics(self) -> EvModel:
        self.spec()
        return self

    def spec(self) -> EvSpec:
        return EvSpec(**self.model_dump())


class DcdcModel(_Model):
    """A home's DC-DC converter between its battery and the shared DC bus (``ConverterSpec``).

    Which converter holds the bus (CV) and which inject or draw current (CC) is the dispatcher's
    choice over Modbus (64200 ``Mode``), not the scenario's: every converter starts in WAIT.
    """

    max_a: int | None = Field(default=None, gt=0)
    efficiency: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _physics(self) -> DcdcModel:
        self.spec()
        return self

    def spec(self) -> ConverterSpec:
        return ConverterSpec(**self.model_dump(exclude_unset=True))


_HOME_SPEC_FIELDS = ("pv_peak_w", "base_load_w", "battery_wh", "battery_max_w", "soc_start_pct",
                     "soc_min_pct", "soc_max_pct", "charge_efficiency", "discharge_efficiency",
                     "cloudiness", "flex_w", "flex_wh", "seed")


class HomeModel(_Model):
    """One home, or ``count`` alike homes. Unset fields take ``HomeSpec``'s defaults.

    ``flex_w``/``flex_wh`` are the deferrable load (a job of ``flex_wh`` per day at ``flex_w``).
    """

    name: Name
    count: int = Field(default=1, ge=1, le=1000)
    bus: Name | None = None
    # Upper bounds are what the served SunSpec registers can hold (the firmware roles' limits).
    pv_peak_w: int | None = Field(default=None, ge=0, le=32767)
    base_load_w: int | None = Field(default=None, ge=0)
    battery_wh: int | None = Field(default=None, gt=0, le=655350)
    battery_max_w: int | None = Field(default=None, ge=0, le=32767)
    soc_start_pct: float | None = Field(default=None, ge=0, le=100)
    soc_min_pct: float | None = Field(default=None, ge=0, le=100)
    soc_max_pct: float | None = Field(default=None, ge=0, le=100)
    charge_efficiency: float | None = Field(default=None, gt=0, le=1)
    discharge_efficiency: float | None = Field(default=None, gt=0, le=1)
    cloudiness: float | None = Field(default=None, ge=0, le=1)
    flex_w: int | None = Field(default=None, ge=0)
    flex_wh: int | None = Field(default=None, ge=0)
    seed: int | None = None
    export_limit_w: int | None = Field(default=None, ge=0)
    """The grid operator's export limit at the home's meter (0: zero export), its gateway's
    ``[grid] export_limit_w``."""
    min_sell_price: int | None = Field(default=None, ge=0, le=MAX_PRICE)
    max_buy_price: int | None = Field(default=None, ge=0, le=MAX_PRICE)
    """The owner's preferences, µ/Wh, its gateway's ``[preferences]`` (unset: the gateway's
    defaults). Owners who differ make the price move with who is selling and who is short."""
    v2g_min_soc_pct: int | None = Field(default=None, ge=0, le=100)
    """The owner's consent to V2G (its gateway's ``[preferences] v2g_min_soc_pct``): the floor
    its car, on a charger that can feed back (``ev.max_discharge_w``), is never drawn below."""
    ev: EvModel | None = None
    dcdc: DcdcModel | None = None
    faults: dict[Role, FaultsModel] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> HomeModel:
        if self.seed is not None and self.count > 1:
            raise ValueError("give no seed with count > 1: each home derives its own")
        if "dcdc" in self.faults and self.dcdc is None:
            raise ValueError("faults.dcdc given but the home has no dcdc converter")
        if "ev" in self.faults and self.ev is None:
            raise ValueError("faults.ev given but the home has no ev")
        if "flex" in self.faults and not self.flex_wh:
            raise ValueError("faults.flex given but the home has no flexible load (flex_wh)")
        if self.v2g_min_soc_pct is not None and self.ev is None:
            raise ValueError("v2g_min_soc_pct given but the home has no ev")
        if len(self.names[-1]) > 32:
            raise ValueError(f"home names must be at most 32 characters, {self.names[-1]!r} "
                             "is longer")
        self.spec_for(self.name)  # the physics has the last word on what a home can be
        return self

    @property
    def names(self) -> tuple[str, ...]:
        if self.count == 1:
            return (self.name,)
        return tuple(f"{self.name}-{i}" for i in range(1, self.count + 1))

    def spec_for(self, name: str) -> HomeSpec:
        """The ``HomeSpec`` of one of this entry's ``names``."""
        fields: dict[str, Any] = self.model_dump(include=set(_HOME_SPEC_FIELDS),
                                                 exclude_unset=True)
        dcdc = self.dcdc.spec() if self.dcdc is not None else None
        ev = self.ev.spec() if self.ev is not None else None
        return HomeSpec(name=name, dcdc=dcdc, ev=ev, **fields)


class LineModel(_Model):
    """The line from ``bus`` up to ``parent``; see ``sim_devices/feeder.py``."""

    bus: Name
    parent: Name
    capacity_w: int = Field(gt=0)
    resistance_ohm: float = Field(ge=0)
    length_m: int = Field(default=0, ge=0)


class FeederModel(_Model):
    """A radial feeder: the substation bus ``root`` and one line per other bus."""

    root: Name = "substation"
    nominal_v: float = Field(default=400.0, gt=0)
    lines: tuple[LineModel, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _radial(self) -> FeederModel:
        self.radial()
        return self

    def radial(self) -> RadialFeeder:
        return RadialFeeder(root=self.root, nominal_v=self.nominal_v, lines=[
            FeederLine(**line.model_dump()) for line in self.lines])


class DcBusModel(_Model):
    """The shared DC bus (``DcBusSpec``): voltages in V, capacitance in mF; unset = defaults.

    Outside ``v_min``..``v_max`` the protection trips every converter on the bus.
    """

    nominal_v: int | None = Field(default=None, gt=0)
    v_min: int | None = Field(default=None, gt=0)
    v_max: int | None = Field(default=None, gt=0)
    capacitance_mf: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _physics(self) -> DcBusModel:
        self.spec()
        return self

    def spec(self) -> DcBusSpec:
        return DcBusSpec(**self.model_dump(exclude_unset=True))


class Scenario(_Model):
    """A community to simulate. ``start`` is the time of day the world starts at (day 0)."""

    name: Name
    description: str = ""
    seed: int = 0
    start: time = time(0, 0)
    speed: float = Field(default=60.0, gt=0)
    dt_ms: int = Field(default=1000, gt=0)
    tariffs: TariffsModel = TariffsModel()
    market: MarketModel
    homes: tuple[HomeModel, ...] = Field(min_length=1)
    feeder: FeederModel | None = None
    dc_bus: DcBusModel | None = None

    @model_validator(mode="after")
    def _cross_references(self) -> Scenario:
        seen: dict[str, int] = {}
        for i, home in enumerate(self.homes):
            for name in home.names:
                if name in seen:
                    raise ValueError(f"homes.{i}.name: home {name!r} is also homes.{seen[name]}")
                seen[name] = i
        buses = self.feeder.radial().buses if self.feeder else frozenset()
        for i, home in enumerate(self.homes):
            if self.feeder and home.bus is None:
                raise ValueError(f"homes.{i}.bus: required when the scenario has a [feeder]")
            if home.bus is not None and home.bus not in buses:
                raise ValueError(f"homes.{i}.bus: {home.bus!r} is not a bus of the [feeder]"
                                 + (f" (buses: {', '.join(sorted(buses))})" if buses else ""))
            if home.dcdc is not None and self.dc_bus is None:
                raise ValueError(f"homes.{i}.dcdc: a converter needs a [dc_bus] to connect to")
        if self.dc_bus is not None and not any(home.dcdc for home in self.homes):
            raise ValueError("dc_bus: no home has a dcdc converter to connect to it")
        return self

    @property
    def start_s(self) -> int:
        """Simulated seconds since midnight of day 0 at which the world starts."""
        return self.start.hour * 3600 + self.start.minute * 60 + self.start.second

    def home_specs(self) -> list[HomeSpec]:
        """Every home of the scenario, ``count`` groups expanded, in file order."""
        return [home.spec_for(name) for home in self.homes for name in home.names]

    def faults(self) -> dict[tuple[str, str], FaultSpec]:
        """``(home, role) -> FaultSpec`` for every device that has faults."""
        return {(name, role): fault.spec() for home in self.homes for name in home.names
                for role, fault in home.faults.items()}

    def export_limits(self) -> dict[str, int]:
        """Each home's export limit in W, for the homes that have one."""
        return {name: home.export_limit_w for home in self.homes
                if home.export_limit_w is not None for name in home.names}

    def preferences(self) -> dict[str, dict[str, int]]:
        """Each home's owner preferences that the scenario sets (``min_sell_price``,
        ``max_buy_price``, ``v2g_min_soc_pct``), for the homes that set any."""
        chosen = [(home.names, {field: value for field in ("min_sell_price", "max_buy_price",
                                                           "v2g_min_soc_pct")
                                if (value := getattr(home, field)) is not None})
                  for home in self.homes]
        return {name: wishes for names, wishes in chosen if wishes for name in names}

    def bus_of(self) -> dict[str, str]:
        """Which bus of the feeder each home hangs on (empty without a feeder)."""
        return {name: home.bus for home in self.homes if home.bus is not None
                for name in home.names}

    def world(self, *, speed: float | None = None, dt_ms: int | None = None) -> World:
        """The simulated world of this scenario; ``speed`` and ``dt_ms`` override the file's."""
        try:
            return World(homes=self.home_specs(), seed=self.seed,
                         speed=self.speed if speed is None else speed,
                         start_s=self.start_s, dt_ms=self.dt_ms if dt_ms is None else dt_ms,
                         faults=self.faults(),
                         dc_bus=self.dc_bus.spec() if self.dc_bus is not None else None)
        except ValueError as exc:  # PhysicsError, or a role refusing a nameplate (RoleError)
            raise ScenarioError(f"{self.name}: {exc}") from None


def shipped_scenarios() -> list[str]:
    """Names of the scenarios installed with the package."""
    folder = resources.files("sim_devices") / _SHIPPED
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir()
                  if p.name.endswith(".toml"))


def load_scenario(path_or_name: str | Path) -> Scenario:
    """A scenario from a TOML file, or a shipped one by name (``sunny-street``); a tariff file it
    names is taken from the scenario's folder (``tariffs.schedule`` becomes its full path)."""
    text_path = str(path_or_name)
    folder: Path
    if isinstance(path_or_name, Path) or text_path.endswith(".toml") or "/" in text_path:
        path = Path(path_or_name)
        folder = path.resolve().parent
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ScenarioError(f"{path}: no such file") from None
        source = str(path)
    else:
        shipped = resources.files("sim_devices") / _SHIPPED / f"{text_path}.toml"
        if not shipped.is_file():
            raise ScenarioError(f"no scenario {text_path!r}; shipped scenarios are "
                                f"{', '.join(shipped_scenarios())} (or give a .toml path)")
        text = shipped.read_text(encoding="utf-8")
        source = text_path
        folder = Path(str(resources.files("sim_devices") / _SHIPPED))
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from None
    scenario = parse_scenario(raw, source=source)
    schedule = scenario.tariffs.schedule
    if schedule is None:
        return scenario
    tariff_file = folder / schedule
    if not tariff_file.is_file():
        raise ScenarioError(f"{source}: tariffs.schedule: no file {schedule!r} in the "
                            "scenario's folder")
    tariffs = scenario.tariffs.model_copy(update={"schedule": str(tariff_file)})
    return scenario.model_copy(update={"tariffs": tariffs})


def parse_scenario(raw: dict[str, Any], *, source: str) -> Scenario:
    """Validate a parsed TOML table; every problem becomes one ``source: key.path: ...`` line."""
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(_describe(exc, source=source)) from None


_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "missing": "required",
    "extra_forbidden": "unknown key (check the spelling)",
    "string_pattern_mismatch": "must be lowercase letters, digits and '-' (at most 32)",
    "too_short": "must not be empty",
    "literal_error": "must be {expected}",
}


def _describe(exc: ValidationError, *, source: str) -> str:
    errors = exc.errors()
    lines = []
    for err in errors:
        loc = err["loc"]
        if err["type"] == "too_short" and any(e["loc"][:len(loc)] == loc and e["loc"] != loc
                                              for e in errors):
            continue  # pydantic counts an array whose every entry failed as empty: noise
        path = ".".join(str(p) for p in loc if p != "[key]")  # "[key]": a bad table key
        template = _MESSAGES.get(err["type"])
        msg = (template.format(**err.get("ctx", {})) if template
               else err["msg"].removeprefix("Value error, "))
        # Cross-reference checks name their own key path; field checks get theirs from pydantic.
        lines.append(f"{source}: {path}: {msg}" if path else f"{source}: {msg}")
    return "\n".join(lines)
