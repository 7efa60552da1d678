"""The config's market sections: timing and the community's rules (``[market]``), its feeder
(``[market.network]``) and the grid tariffs (``[tariffs]``). Every member uses the same values;
each section gives the domain object it configures (``market.timing()``, ``tariffs.tariffs()``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.section import NodeId, Section, mqtt_url, ms
from gateway.plan.tariff_file import load_schedule
from gateway.plan.tariff_schedule import TariffSchedule
from gateway.tls import TlsFiles
from protocols.clearing import Tariffs
from protocols.keycheck import key_problem
from protocols.market import Timing
from protocols.messages import MAX_PRICE
from protocols.network import Feeder, FeeSchedule, Line, NetworkError


class FeederLineConfig(Section):
    """The line from ``bus`` up to ``parent`` (towards the substation), rated ``capacity_w``."""

    bus: NodeId
    parent: NodeId
    length_m: int = Field(ge=0)
    capacity_w: int = Field(gt=0)


class NetworkConfig(Section):
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


class MarketConfig(Section):
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
        return mqtt_url(v, example="mqtt://host:1883 or mqtts://host:8883")

    def timing(self) -> Timing:
        return Timing(epoch_ms=self.epoch_ms, length_ms=ms(self.interval_s),
                      gate_ms=ms(self.gate_s), grace_ms=ms(self.grace_s))

    def tls(self) -> TlsFiles | None:  # an mqtts:// broker's, validated to come as three
        if self.tls_ca is None or self.tls_cert is None or self.tls_key is None:
            return None
        return TlsFiles(ca=self.tls_ca, cert=self.tls_cert, key=self.tls_key)

    @model_validator(mode="after")
    def _timing(self) -> MarketConfig:
        if ms(self.gate_s) <= ms(self.grace_s):
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


class TariffConfig(Section):
    """Grid tariffs in µ/Wh (0.30 €/kWh = 300)."""

    retail_price: int = Field(default=300, gt=0, le=MAX_PRICE)
    feed_in_price: int = Field(default=80, ge=0, le=MAX_PRICE)
    schedule: Path | None = None
    """The community's time-of-use or day-ahead tariff file (``.csv`` or ``.toml``), the same in
    every member: the home's plan prices each interval with it, and the community clears and
    settles each interval at its prices (:mod:`protocols.market.tariffs`); the fixed prices
    above apply where it says nothing."""

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
