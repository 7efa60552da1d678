"""What the owner sees of the home now: one typed :class:`Status`, read by ``gridpeer status``
(from ``status.json``), the dashboard, /metrics and Home Assistant. A device that is stale is
left out (None), never shown with its last reading.

The node builds it every control period and writes it to ``status.json`` atomically; whoever
reads it gets fields, not string keys, and the file's JSON is :meth:`Status.to_json`, read back
by :meth:`Status.from_json`. Powers follow the project's signs (+ = import / charge).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from gateway.devices import DevicePoller
from gateway.home.adoption import Adoption, Phase
from gateway.ledger import Ledger
from protocols.market import Timing


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    stale: bool
    age_s: float | None
    polls: int
    failures: int
    last_error: str | None
    adoption: Literal["adopted", "waiting", "found"] = "adopted"
    """``waiting``: not in the home, retried (``why``, ``missing``, ``retry_in_s`` say more);
    ``found``: answered, in the home from the next interval."""
    why: Literal["absent", "unsupported"] | None = None
    """``absent``: no answer (asleep, off, unplugged); ``unsupported``: answered with a map its
    kind cannot be driven through."""
    missing: str | None = None
    """What the last try missed, in the device layer's words."""
    retry_in_s: float | None = None
    tries: int = 0

    @classmethod
    def of(cls, poller: DevicePoller[Any], adoption: Adoption | None = None,
           now_s: float = 0.0) -> DeviceHealth:
        """A device's health from its poller and, for a device not adopted yet, its adoption
        (``now_s`` on the adoption's clock)."""
        health = poller.health
        polled = cls(stale=poller.stale, age_s=poller.age_s, polls=health.polls,
                     failures=health.failures, last_error=health.last_error)
        if adoption is None or adoption.phase is Phase.ADOPTED:
            return polled
        waiting = adoption.phase is Phase.WAITING
        return replace(polled, stale=True, adoption=adoption.phase.value, why=adoption.why,
                       missing=adoption.reason, tries=adoption.tries,
                       retry_in_s=max(0.0, adoption.next_try_s - now_s) if waiting else None)


@dataclass(frozen=True, slots=True)
class BatteryStatus:
    soc_pct: float | None
    """None: unknown (the battery does not say, e.g. a 713 leaving SoC "not implemented")."""
    power_w: int | None
    """None: the battery does not measure its power (no model 802)."""
    setpoint_w: int


@dataclass(frozen=True, slots=True)
class MeterStatus:
    power_w: int
    import_wh: int
    export_wh: int


@dataclass(frozen=True, slots=True)
class PvStatus:
    power_w: int
    """− = producing."""


@dataclass(frozen=True, slots=True)
class BidStatus:
    """The bid standing for the next interval."""

    interval: int
    side: Literal["buy", "sell"]
    energy_wh: int
    limit_price: int
    shifted_load_wh: int


@dataclass(frozen=True, slots=True)
class ClearingStatus:
    """The last interval in the ledger: its status, the agreed price and this home's figures."""

    interval: int
    status: str
    price: int | None
    outcome: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ConverterStatus:
    role: Literal["master", "member"]
    mode: str
    current_a: float
    voltage_v: float
    reason: str
    limits: tuple[str, ...]
    bus_v: float | None
    measured_a: float | None


@dataclass(frozen=True, slots=True)
class PlanStatus:
    """How the last bid was planned: ``source`` the optimiser or the heuristic (``fallback``
    says why it stood in), what the optimiser could not keep (``violations``, one line each),
    fallbacks so far by reason, and the PV cap the export limit holds now (W, None: none)."""

    source: Literal["optimiser", "heuristic"]
    fallback: str | None
    violations: tuple[str, ...]
    fallbacks: dict[str, int]
    pv_cap_w: int | None = None


@dataclass(frozen=True, slots=True)
class Status:
    """The home's gateway now. ``money_today`` is µ, + = paid (the ledger's sign)."""

    node: str
    now_ms: int
    interval: int
    mode: Literal["safe", "market"]
    safe_reason: str
    devices: dict[str, DeviceHealth]
    battery: BatteryStatus | None
    meter: MeterStatus | None
    pv: PvStatus | None
    bid: BidStatus | None
    last_clearing: ClearingStatus | None
    money_today: int
    rejections: dict[str, int]
    """Peer messages this node's market agent refused, by reason."""
    reputation: int | None
    """This node's own delivery ratio as it settled it, per-mille."""
    meter_rejections: dict[str, int]
    control_faults: dict[str, int]
    device_holds: dict[str, int]
    converter: ConverterStatus | None
    plan: PlanStatus | None = None
    v2g_refusals: dict[str, int] = field(default_factory=dict)
    """Why the car did not feed the home when the plan asked it to (control periods, by reason:
    ``at-floor``, ``ready-by``, ``no-pack``), and the V2G chargers' readings whose pack was not
    believed (``pack <point>``)."""

    def to_json(self) -> dict[str, Any]:
        """The status as JSON-able data (the status file, ``/api/status``)."""
        data: dict[str, Any] = _ADAPTER.dump_python(self, mode="json")
        return data

    @classmethod
    def from_json(cls, text: str | bytes) -> Status:
        """A status file's text; ``ValueError`` names what does not fit."""
        try:
            return _ADAPTER.validate_json(text)
        except ValidationError as exc:
            raise ValueError(str(exc)) from None

    def write(self, path: Path) -> None:
        """Atomically replace ``path`` so a reader never sees half a file."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        os.replace(tmp, path)


_ADAPTER: TypeAdapter[Status] = TypeAdapter(Status)


class MoneyToday:
    """Net money (µ, + = paid) of the ledger's blocks since a day's start, re-read only when the
    ledger grew or the day changed: the status is built every control period, and re-reading the
    day's blocks each time would be a fifth of a gateway's control work."""

    def __init__(self, *, ledger: Ledger, timing: Timing) -> None:
        self._ledger = ledger
        self._timing = timing
        self._memo: tuple[int, int, int] | None = None  # (first interval, height, money)

    def since(self, start_ms: int) -> int:
        first = (start_ms - self._timing.epoch_ms) // self._timing.length_ms
        height = self._ledger.height()
        if self._memo is not None and self._memo[:2] == (first, height):
            return self._memo[2]
        money = sum(
            int((b.content.get("outcome") or {}).get("money", 0))
            for b, _ in self._ledger.blocks(from_interval=first)
        )
        self._memo = (first, height, money)
        return money


def last_clearing(ledger: Ledger) -> ClearingStatus | None:
    """The ledger's last block as the owner reads it (None before the first)."""
    last = ledger.last()
    if last is None:
        return None
    return ClearingStatus(interval=last.interval, status=last.status,
                          price=last.content.get("price"), outcome=last.content.get("outcome"))
