"""The gateway service of one home: devices, EMS, market, dispatch and ledger in one TaskGroup.

Each concern is one long-lived task: a poller per device keeps readings fresh, the *trader* plans
each interval ahead of its gate closure and bids the residual, and the *controller* writes the
battery setpoint every control period from the agreed outcome (or safe mode) and closes each
interval into the ledger. The tasks share only the latest readings and the per-interval records
below; none of them waits on another's I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.clock import Clock
from gateway.config import DeviceConfig, GatewayConfig, PreferencesConfig
from gateway.devices import (
    Battery,
    BatteryReading,
    DevicePoller,
    Meter,
    MeterReading,
    ModbusBus,
    ModbusSerialBus,
    ModbusTcpBus,
    PvInverter,
    PvReading,
    discover,
)
from gateway.devices.errors import DeviceError
from gateway.dispatch import Decision, IntervalTarget, decide
from gateway.ems import BatteryState, Plan, Preferences, plan_interval
from gateway.envelope import BatteryEnvelope
from gateway.forecast import DAY_S, HomeForecaster
from gateway.ledger import Ledger
from gateway.market.agent import MarketAgent, MarketError
from gateway.market.session import Abstained, Agreed, Timing
from protocols.clearing import ClearingParams, NodeOutcome, Tariffs
from protocols.messages import SignedEnvelope
from protocols.settlement import SettlementFigures, settle

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BidMade:
    node: str
    interval: int
    plan: Plan


@dataclass(frozen=True, slots=True)
class IntervalClosed:
    node: str
    interval: int
    outcome: Agreed | Abstained | None
    metered_wh: int
    setpoint_w: int
    soc_pct: float
    settlement: SettlementFigures | None
    in_market: bool
    """False for the interval already running when the gateway started (it never traded it)."""


@dataclass(frozen=True, slots=True)
class SetpointWritten:
    node: str
    interval: int
    decision: Decision
    soc_pct: float


Event = BidMade | IntervalClosed | SetpointWritten


@dataclass(slots=True)
class _IntervalRecord:
    plan: Plan | None = None
    outcome: Agreed | Abstained | None = None
    meter_start_wh: float | None = None
    last_decision: Decision | None = None


@dataclass(slots=True)
class NodeState:
    """What the dashboard and ``gridpeer status`` read; written only by the node's own tasks."""

    records: dict[int, _IntervalRecord] = field(default_factory=dict)
    setpoint_w: int = 0
    safe_reason: str = ""


def open_bus(device: DeviceConfig) -> ModbusBus:
    """The bus a device's URL names: ``tcp://host:port`` or ``rtu:///dev/tty?baud=9600``."""
    url = urlsplit(device.url)
    if url.scheme == "tcp":
        assert url.hostname is not None and url.port is not None  # validated by the config
        return ModbusTcpBus(host=url.hostname, port=url.port, timeout_s=device.timeout_s)
    query = parse_qs(url.query)
    baud = int(query.get("baud", ["9600"])[0])
    return ModbusSerialBus(port=url.path, baudrate=baud, timeout_s=device.timeout_s)


class GatewayNode:
    """One home's gateway. ``async with GatewayNode(...) as node: await node.run()``."""

    def __init__(
        self,
        *,
        config: GatewayConfig,
        key: Ed25519PrivateKey,
        certificate: SignedEnvelope,
        clock: Clock,
        on_event: Callable[[Event], None] = lambda _e: None,
        bid_lead_fraction: float = 0.25,
        trade: bool = True,
    ) -> None:
        self.config = config
        self._key = key
        self._certificate = certificate
        self.clock = clock
        self._on_event = on_event
        self._trade_enabled = trade
        market = config.market
        self.timing = Timing(
            epoch_ms=market.epoch_ms,
            length_ms=int(market.interval_s * 1000),
            gate_ms=int(market.gate_s * 1000),
            grace_ms=int(market.grace_s * 1000),
        )
        self._bid_lead_ms = int(market.interval_s * 1000 * bid_lead_fraction)
        self.tariffs = Tariffs(
            retail_price=config.tariffs.retail_price, feed_in_price=config.tariffs.feed_in_price
        )
        env = config.envelope
        self.envelope = BatteryEnvelope(
            soc_min_pct=env.soc_min_pct, soc_max_pct=env.soc_max_pct,
            max_charge_w=env.max_charge_w, max_discharge_w=env.max_discharge_w,
            ramp_w_per_s=env.ramp_w_per_s,
        )
        self.update_preferences(config.preferences)
        self.state = NodeState()
        self._forecast_path = config.state_dir / "forecast.json"
        self.forecaster = self._load_forecaster()
        self._stack = contextlib.AsyncExitStack()
        self.meter: DevicePoller[MeterReading] | None = None
        self.battery: DevicePoller[BatteryReading] | None = None
        self.pv: DevicePoller[PvReading] | None = None
        self._battery_driver: Battery | None = None
        self.agent: MarketAgent | None = None
        self.ledger: Ledger | None = None
        self._first_traded = 2**62  # set by the trader: no outcome is awaited before it

    @property
    def name(self) -> str:
        return self.config.node

    def _load_forecaster(self) -> HomeForecaster:
        try:
            return HomeForecaster.from_json(self._forecast_path.read_text())
        except FileNotFoundError:
            return HomeForecaster()
        except ValueError as exc:
            log.warning("%s: starting a fresh forecast profile: %s", self.name, exc)
            return HomeForecaster()

    def _save_forecaster(self) -> None:
        tmp = self._forecast_path.with_suffix(".tmp")
        tmp.write_text(self.forecaster.to_json())
        os.replace(tmp, self._forecast_path)

    async def __aenter__(self) -> GatewayNode:
        try:
            await self._open()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._stack.aclose()

    async def _open(self) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger.open(self.config.state_dir / "ledger.db")
        self._stack.callback(self.ledger.close)
        for device in self.config.devices:
            bus = await self._stack.enter_async_context(open_bus(device))
            found = await discover(bus, unit=device.unit)
            period = self.clock.real_seconds(device.poll_s * 1000)
            if device.kind == "meter":
                self.meter = DevicePoller(
                    name=device.name, driver=Meter(bus=bus, device=found), period_s=period,
                    stale_after=device.stale_after,
                )
            elif device.kind == "battery":
                self._battery_driver = Battery(bus=bus, device=found)
                self.battery = DevicePoller(
                    name=device.name, driver=self._battery_driver, period_s=period,
                    stale_after=device.stale_after,
                )
            elif device.kind == "pv":
                self.pv = DevicePoller(
                    name=device.name, driver=PvInverter(bus=bus, device=found), period_s=period,
                    stale_after=device.stale_after,
                )
        market = self.config.market
        self.agent = await self._stack.enter_async_context(MarketAgent(
            broker_url=market.broker, community=market.community, node=self.name,
            identity=self._key, certificate=self._certificate,
            authority_key_hex=market.authority_key, timing=self.timing,
            params=ClearingParams(tariffs=self.tariffs), clock=self.clock.now_ms,
            mechanism=market.mechanism, quorum=(market.quorum_num, market.quorum_den),
        ))

    async def run(self) -> None:
        assert self.agent is not None, "use `async with GatewayNode(...)` first"
        async with asyncio.TaskGroup() as tg:
            for poller in (self.meter, self.battery, self.pv):
                if poller is not None:
                    tg.create_task(poller.run(), name=f"{self.name}-poll-{poller.name}")
            if self._trade_enabled:
                tg.create_task(self._trade(), name=f"{self.name}-trader")
            else:  # self-consumption only, still settled and recorded (the no-market baseline)
                self._first_traded = self.timing.open_interval(self.clock.now_ms())
            tg.create_task(self._control(), name=f"{self.name}-controller")

    # -- trader: plan and bid each interval ahead of its gate closure -----------------------

    def _record(self, k: int) -> _IntervalRecord:
        return self.state.records.setdefault(k, _IntervalRecord())

    async def _trade(self) -> None:
        assert self.agent is not None
        k = self._interval_at(self.clock.now_ms()) + 1
        while self._bid_time(k) < self.clock.now_ms():
            k += 1
        self._first_traded = k
        while True:
            await self.clock.sleep_until(self._bid_time(k))
            plan = self._plan(k)
            self._record(k).plan = plan
            if plan is not None and plan.side is not None:
                await self.agent.submit_bid(
                    interval=k, side=plan.side, energy_wh=plan.energy_wh,
                    limit_price=plan.limit_price,
                )
            if plan is not None:
                self._on_event(BidMade(node=self.name, interval=k, plan=plan))
            k += 1

    def _interval_at(self, now_ms: int) -> int:
        return (now_ms - self.timing.epoch_ms) // self.timing.length_ms

    def _bid_time(self, k: int) -> int:
        return self.timing.start_ms(k) - self.timing.gate_ms - self._bid_lead_ms

    def _plan(self, k: int) -> Plan | None:
        """The EMS plan for interval ``k``; None (no bid) when the devices cannot be trusted."""
        battery = self._fresh(self.battery)
        if self.meter is None or self._fresh(self.meter) is None:
            log.warning("%s: meter stale, not bidding for interval %d", self.name, k)
            return None
        state = None
        if battery is not None and battery.capacity_wh:
            state = BatteryState(
                capacity_wh=int(battery.capacity_wh), soc_pct=battery.soc_pct,
                max_charge_w=min(int(battery.max_charge_w), self.envelope.max_charge_w),
                max_discharge_w=min(int(battery.max_discharge_w), self.envelope.max_discharge_w),
            )
        length_s = self.timing.length_ms / 1000
        pv_wh, load_wh = self.forecaster.forecast_wh(
            start_s=self.timing.start_ms(k) / 1000 % DAY_S, length_s=length_s
        )
        return plan_interval(
            pv_wh=pv_wh, load_wh=load_wh, battery=state, prefs=self.prefs, tariffs=self.tariffs,
            interval_s=length_s,
        )

    @staticmethod
    def _fresh(poller: DevicePoller[Any] | None) -> Any:
        if poller is None or poller.stale:
            return None
        return poller.latest

    # -- controller: setpoints every control period, ledger at each interval end -------------

    async def _control(self) -> None:
        period_ms = int(min((d.poll_s for d in self.config.devices), default=1.0) * 1000)
        current = self._interval_at(self.clock.now_ms())
        watchers: dict[int, asyncio.Task[None]] = {}
        while True:
            now = self.clock.now_ms()
            k = self._interval_at(now)
            if k != current:
                self._close_interval(current)
                current = k
            for j in (k, k + 1):
                if j not in watchers and j >= self._first_traded:
                    watchers[j] = asyncio.create_task(self._watch_outcome(j))
            await self._control_step(k, now, period_ms)
            self.write_status()
            await self.clock.sleep_until(now + period_ms)

    async def _watch_outcome(self, k: int) -> None:
        assert self.agent is not None
        try:
            self._record(k).outcome = await self.agent.outcome(k)
        except MarketError as exc:
            log.warning("%s: no outcome for interval %d: %s", self.name, k, exc)

    async def _control_step(self, k: int, now_ms: int, period_ms: int) -> None:
        if self._battery_driver is None:
            self.state.safe_reason = "no battery: nothing to dispatch"
            return
        meter = self._fresh(self.meter)
        battery = self._fresh(self.battery)
        pv = self._fresh(self.pv)
        if battery is None:
            self.state.safe_reason = "battery stale: its revert timer returns it to idle"
            return
        record = self._record(k)
        if meter is not None:
            pv_w = -pv.power_w if pv is not None else 0
            self.forecaster.observe(
                time_of_day_s=now_ms / 1000 % DAY_S, pv_w=pv_w,
                load_w=meter.power_w - battery.power_w + pv_w,
            )
            net_wh = meter.import_wh - meter.export_wh
            if record.meter_start_wh is None:
                record.meter_start_wh = net_wh
        target, reason = self._target(record, meter)
        elapsed_s = (now_ms - self.timing.start_ms(k)) / 1000
        decision = decide(
            target=target, elapsed_s=elapsed_s,
            metered_wh=0.0 if meter is None or record.meter_start_wh is None
            else meter.import_wh - meter.export_wh - record.meter_start_wh,
            meter_w=meter.power_w if meter is not None else battery.power_w,
            battery_w=battery.power_w, soc_pct=battery.soc_pct,
            previous_w=self.state.setpoint_w, dt_s=period_ms / 1000,
            envelope=self.envelope.within_device(
                max_charge_w=battery.max_charge_w, max_discharge_w=battery.max_discharge_w,
                soc_min_pct=battery.soc_min_pct, soc_max_pct=battery.soc_max_pct,
            ),
            safe_reason=reason,
        )
        try:
            written = await self._battery_driver.set_power(
                watts=decision.setpoint_w, revert_s=self.config.envelope.revert_s
            )
        except (DeviceError, ValueError) as exc:
            log.warning("%s: battery setpoint not written: %s", self.name, exc)
            return
        self.state.setpoint_w = written
        self.state.safe_reason = "" if decision.mode == "market" else decision.reason
        first = record.last_decision is None
        record.last_decision = decision
        if first:
            self._on_event(SetpointWritten(
                node=self.name, interval=k, decision=decision, soc_pct=battery.soc_pct))

    def _target(
        self, record: _IntervalRecord, meter: MeterReading | None
    ) -> tuple[IntervalTarget | None, str]:
        if meter is None:
            return None, "meter stale"
        if record.plan is None:
            return None, "no plan for this interval"
        if not isinstance(record.outcome, Agreed):
            reason = record.outcome.reason if isinstance(record.outcome, Abstained) else "pending"
            return None, f"no agreement ({reason})"
        return IntervalTarget(
            meter_wh=-record.plan.residual_wh, length_s=self.timing.length_ms / 1000
        ), ""

    def update_preferences(self, prefs: PreferencesConfig) -> None:
        """Apply the owner's new preferences from the next bid on (already validated)."""
        self.prefs = Preferences(
            min_sell_price=prefs.min_sell_price, max_buy_price=prefs.max_buy_price,
            reserve_pct=max(prefs.reserve_pct, self.config.envelope.soc_min_pct),
            soc_max_pct=self.config.envelope.soc_max_pct,
        )
        log.info("%s: preferences updated: %s", self.name, prefs.model_dump())

    def snapshot(self) -> dict[str, Any]:
        """What the owner wants to see now, as JSON-able data (status file, dashboard, API)."""
        now = self.clock.now_ms()
        k = self._interval_at(now)
        devices = {}
        for poller in (self.meter, self.battery, self.pv):
            if poller is not None:
                health = poller.health
                devices[poller.name] = {
                    "stale": poller.stale, "age_s": poller.age_s, "polls": health.polls,
                    "failures": health.failures, "last_error": health.last_error,
                }
        battery = self._fresh(self.battery)
        meter = self._fresh(self.meter)
        next_plan = self.state.records.get(k + 1, _IntervalRecord()).plan
        last = self.ledger.last() if self.ledger is not None else None
        return {
            "node": self.name,
            "now_ms": now,
            "interval": k,
            "mode": "safe" if self.state.safe_reason else "market",
            "safe_reason": self.state.safe_reason,
            "devices": devices,
            "battery": None if battery is None else {
                "soc_pct": battery.soc_pct, "power_w": battery.power_w,
                "setpoint_w": self.state.setpoint_w,
            },
            "meter": None if meter is None else {
                "power_w": meter.power_w, "import_wh": meter.import_wh,
                "export_wh": meter.export_wh,
            },
            "bid": None if next_plan is None or next_plan.side is None else {
                "interval": k + 1, "side": next_plan.side, "energy_wh": next_plan.energy_wh,
                "limit_price": next_plan.limit_price,
            },
            "last_clearing": None if last is None else {
                "interval": last.interval, "status": last.status,
                "price": last.content.get("price"),
                "outcome": last.content.get("outcome"),
            },
            "money_today": self._money_since(now - now % 86_400_000),
            "rejections": dict(self.agent.rejections) if self.agent is not None else {},
        }

    def _money_since(self, start_ms: int) -> int:
        """Net money (µ, + = paid) of the ledger blocks since ``start_ms``."""
        if self.ledger is None:
            return 0
        first = (start_ms - self.timing.epoch_ms) // self.timing.length_ms
        return sum(
            int((b.content.get("outcome") or {}).get("money", 0))
            for b, _ in self.ledger.blocks(from_interval=first)
        )

    def write_status(self) -> None:
        """Atomically replace ``status.json`` so ``gridpeer status`` never reads half a file."""
        path = self.config.state_dir / "status.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot(), indent=1))
        os.replace(tmp, path)

    def _close_interval(self, k: int) -> None:
        """Settle interval ``k`` into the ledger and hand its closing meter reading to ``k + 1``.

        The reading that closes one interval opens the next, so no metered Wh falls between two.
        """
        record = self.state.records.pop(k, None)
        meter = self._fresh(self.meter)
        metered = 0
        if meter is not None:
            net_wh = meter.import_wh - meter.export_wh
            if record is not None and record.meter_start_wh is not None:
                metered = round(net_wh - record.meter_start_wh)
            self._record(k + 1).meter_start_wh = net_wh
        outcome = record.outcome if record is not None else None
        if outcome is None and k >= self._first_traded:
            # No quorum was ever heard (broker away, outcome pending): the interval ran in safe
            # mode and its metered energy is still settled, with the grid, and recorded.
            outcome = Abstained(interval=k, reason="no-outcome")
        figures = None
        if outcome is not None:
            position = outcome.position if isinstance(outcome, Agreed) else None
            figures = settle(position or _NO_POSITION, delivered_wh=metered, tariffs=self.tariffs)
            if self.ledger is not None:
                self.ledger.append(
                    interval=k,
                    status="agreed" if isinstance(outcome, Agreed) else "abstained",
                    content=ledger_content(outcome, figures),
                )
        self._save_forecaster()
        battery = self._fresh(self.battery)
        self._on_event(IntervalClosed(
            node=self.name, interval=k, outcome=outcome, metered_wh=metered,
            setpoint_w=self.state.setpoint_w,
            soc_pct=battery.soc_pct if battery is not None else float("nan"),
            settlement=figures, in_market=k >= self._first_traded,
        ))


_NO_POSITION = NodeOutcome("", 0, 0, 0, 0, 0, 0, 0, 0)


def ledger_content(outcome: Agreed | Abstained, figures: SettlementFigures) -> dict[str, Any]:
    """The ledger block content of one interval for this node.

    ``outcome`` holds the settled figures (metered delivery against the cleared position, every
    deviation at the grid tariffs): that is what the owner pays or is paid, so billing exports
    and "money today" read it directly.
    """
    own = figures._asdict()
    if isinstance(outcome, Abstained):
        return {"reason": outcome.reason, "outcome": own}
    mine = outcome.position or _NO_POSITION
    own.update(bought_wh=mine.bought_wh, sold_wh=mine.sold_wh)
    return {
        "result_hash": outcome.result_hash,
        "bid_set_digest": outcome.bid_set_digest,
        "price": outcome.result.price,
        "committed_by": sorted(outcome.committed_by),
        "outcome": own,
    }


@contextlib.asynccontextmanager
async def running(node: GatewayNode) -> AsyncIterator[asyncio.Task[None]]:
    """Run a node in the background for the duration of a ``with`` block (demo, tests)."""
    async with node:
        task = asyncio.create_task(node.run(), name=f"gateway-{node.name}")
        try:
            yield task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

