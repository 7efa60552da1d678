"""One home's gateway: the composition root that wires each concern to the devices it drives,
and the scheduler that runs them in one TaskGroup.

Each concern is one object in its own module: the devices' pollers keep readings fresh
(:mod:`~gateway.home.devices`), the trader plans and bids each interval ahead of its gate
(:mod:`~gateway.home.trader`), the battery controller and the DC link write setpoints every
control period from the agreed outcome or safe mode (:mod:`~gateway.home.battery`,
:mod:`~gateway.home.dc_link`), the loads controller limits the flexible loads
(:mod:`~gateway.home.loads`), and each interval's end is measured and, once its outcome is final,
settled into the ledger (:mod:`~gateway.home.ending`, :mod:`~gateway.home.closing`). They share
only the latest readings and the per-interval records (:mod:`~gateway.home.records`); none of
them waits on another's I/O.

Neither a device nor a bug stops the node: what a device reports only narrows the safety
envelope, and an error nobody expected is counted and answered with the safe state
(:mod:`~gateway.home.faults`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.clock import Clock
from gateway.config import GatewayConfig, PreferencesConfig
from gateway.home.battery import BatteryController
from gateway.home.closing import IntervalCloser, ledgered_settlements
from gateway.home.dc_link import DcLink
from gateway.home.devices import HomeDevices, control_period_ms, open_devices
from gateway.home.ending import EndedIntervals
from gateway.home.events import HomeEvent
from gateway.home.faults import Faults
from gateway.home.forecasts import ForecastFile
from gateway.home.grid_point import GridPointGuard
from gateway.home.loads import LoadsController
from gateway.home.records import NodeState
from gateway.home.status import (
    BatteryStatus,
    BidStatus,
    MeterStatus,
    MoneyToday,
    PlanStatus,
    PvStatus,
    Status,
    last_clearing,
)
from gateway.home.trader import Trader
from gateway.ledger import Ledger, LedgerOwner
from gateway.market.agent import MarketAgent
from gateway.meterkey import load_meter_key
from gateway.plan import TariffSchedule
from protocols.clearing import ClearingParams
from protocols.market import Agreed, MarketError, MeterKey
from protocols.messages import SignedEnvelope
from protocols.settlement import ReputationRule

log = logging.getLogger(__name__)

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class _Concerns:
    """What opening the node wires: each concern, given the devices it drives."""

    trader: Trader
    battery: BatteryController | None
    dc: DcLink | None
    loads: LoadsController
    grid_point: GridPointGuard | None
    ends: EndedIntervals
    closer: IntervalCloser
    money: MoneyToday


class GatewayNode:
    """One home's gateway. ``async with GatewayNode(...) as node: await node.run()``."""

    def __init__(
        self,
        *,
        config: GatewayConfig,
        key: Ed25519PrivateKey,
        certificate: SignedEnvelope,
        clock: Clock,
        on_event: Callable[[HomeEvent], None] = lambda _e: None,
        bid_lead_fraction: float = 0.25,
        trade: bool = True,
    ) -> None:
        self.config = config
        self._key = key
        self._certificate = certificate
        self.clock = clock
        self._on_event = on_event
        self._trade_enabled = trade
        self.timing = config.market.timing()
        self._bid_lead_ms = int(self.timing.length_ms * bid_lead_fraction)
        self._period_ms = control_period_ms(config.devices)
        self.tariffs = config.tariffs.tariffs()
        self.envelope = config.envelope.battery()
        self.update_preferences(config.preferences)
        self.state = NodeState()
        self._forecasts = ForecastFile(config.state_dir / "forecast.json", node=self.name)
        self._stack = contextlib.AsyncExitStack()
        self.devices = HomeDevices()
        self.faults = Faults(node=self.name)
        self.agent: MarketAgent | None = None
        self.ledger: Ledger | None = None
        self._concerns: _Concerns | None = None

    @property
    def name(self) -> str:
        return self.config.node

    def update_preferences(self, prefs: PreferencesConfig) -> None:
        """Apply the owner's new preferences from the next bid on (already validated)."""
        self.prefs = self.config.plan_preferences(prefs)
        log.info("%s: preferences updated: %s", self.name, prefs.model_dump())

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
        config = self.config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger.open(config.state_dir / "ledger.db",
                                  owner=LedgerOwner(key=self._key, certificate=self._certificate))
        self._stack.callback(self.ledger.close)
        self.devices = await open_devices(config.devices, clock=self.clock, stack=self._stack)
        meter = self.devices.meter
        meter_key = None
        if config.meter_key_file is not None and meter is not None and not meter.adopted:
            log.warning("%s: meter not in the home at start: its readings settle untagged "
                        "(local only) until the gateway restarts with it", self.name)
        elif config.meter_key_file is not None and meter is not None:
            meter_key = MeterKey(device_id=meter.found.common.serial,
                                 key=load_meter_key(config.meter_key_file))
        market = config.market
        schedule = config.tariffs.tariff_schedule()  # one reading for the plan and the market
        self.agent = await self._stack.enter_async_context(MarketAgent(
            broker_url=market.broker, community=market.community, node=self.name,
            identity=self._key, certificate=self._certificate,
            authority_key_hex=market.authority_key, timing=self.timing,
            params=ClearingParams(tariffs=self.tariffs), clock=self.clock.now_ms,
            mechanism=market.mechanism, quorum=(market.quorum_num, market.quorum_den),
            tls=market.tls(), meter_keys=None if meter_key is None else {self.name: meter_key},
            feeder=None if market.network is None else market.network.feeder(
                interval_s=market.interval_s),
            fees=None if market.network is None else market.network.fees(),
            energy_interval_ms=self.timing.length_ms,
            settlements=ledgered_settlements(self.ledger, ReputationRule()),
            schedule=None if config.tariffs.schedule is None else schedule,
        ))
        self._concerns = self._wire(self.agent, self.ledger, meter_key, schedule)

    def _wire(self, agent: MarketAgent, ledger: Ledger, meter_key: MeterKey | None,
              schedule: TariffSchedule) -> _Concerns:
        """Each concern, given the devices it drives and the state it shares."""
        config, devices, revert_s = self.config, self.devices, self.config.envelope.revert_s
        forecaster, state, timing, clock = (self._forecasts.forecaster, self.state, self.timing,
                                            self.clock)
        limits = None if config.grid is None else config.grid.limits()
        loads = LoadsController(node=self.name, loads=devices.loads, prefs=lambda: self.prefs,
                                forecaster=forecaster, state=state, timing=timing, clock=clock,
                                revert_s=revert_s)
        dc, bus_cap_w = None, None
        if devices.converter is not None and config.dc_bus is not None:
            # what the converter carries at the bus's voltage: a DC home's trades cross it
            bus_cap_w = int(config.envelope.converter_max_a * config.dc_bus.voltage_v)
            dc = DcLink(node=self.name, device=devices.converter, master=config.dc_master,
                        bus_voltage_v=config.dc_bus.voltage_v,
                        envelope=config.envelope.converter(), battery_envelope=self.envelope,
                        state=state, timing=timing, clock=clock, revert_s=revert_s)
        battery = None
        if devices.battery is not None:
            battery = BatteryController(
                node=self.name, battery=devices.battery, meter=devices.meter, pv=devices.pv,
                dc=dc, envelope=self.envelope, headroom_pct=config.headroom_pct,
                prefs=lambda: self.prefs, forecaster=forecaster, shifted_w=loads.shifted_w,
                state=state, timing=timing, clock=clock, revert_s=revert_s,
                on_event=self._on_event, limits=limits)
        grid_point = None
        if devices.pv is not None and limits is not None and limits.export_w is not None:
            grid_point = GridPointGuard(node=self.name, export_limit_w=limits.export_w,
                                        meter=devices.meter, pv=devices.pv, revert_s=revert_s)
        trader = Trader(
            node=self.name, agent=agent, meter=devices.meter, battery=devices.battery,
            pv=devices.pv, loads=loads, envelope=self.envelope,
            schedule=schedule,
            limits=limits, planner=config.plan.make(),
            bus_cap_w=bus_cap_w,
            prefs=lambda: self.prefs, forecaster=forecaster, bid_lead_ms=self._bid_lead_ms,
            period_ms=self._period_ms, faults=self.faults, state=state, timing=timing,
            clock=clock, on_event=self._on_event)
        closer = IntervalCloser(node=self.name, agent=agent, ledger=ledger)
        ends = EndedIntervals(
            node=self.name, state=self.state, meter=devices.meter, battery=devices.battery,
            meter_key=meter_key, bus_wh=dc.delivered_wh if dc is not None else lambda _r: 0,
            agent=agent, closer=closer, ended=self._forecasts.save, on_event=self._on_event)
        return _Concerns(trader=trader, battery=battery, dc=dc, loads=loads,
                         grid_point=grid_point, ends=ends,
                         closer=closer, money=MoneyToday(ledger=ledger, timing=self.timing))

    async def run(self) -> None:
        concerns = self._concerns
        assert concerns is not None, "use `async with GatewayNode(...)` first"
        async with asyncio.TaskGroup() as tg:
            for device in self.devices:  # tried until adopted, then polled
                poll = device is not self.devices.converter  # the DC link polls it itself
                tg.create_task(device.run(clock=self.clock, timing=self.timing, poll=poll),
                               name=f"{self.name}-device-{device.name}")
            if self._trade_enabled:
                tg.create_task(concerns.trader.run(), name=f"{self.name}-trader")
            else:  # self-consumption only, still settled and recorded (the no-market baseline)
                self.state.first_traded = self.timing.open_interval(self.clock.now_ms())
            tg.create_task(self._control(concerns), name=f"{self.name}-controller")

    def _interval_at(self, now_ms: int) -> int:
        return (now_ms - self.timing.epoch_ms) // self.timing.length_ms

    async def _control(self, concerns: _Concerns) -> None:
        """Every control period: end the intervals that ended and settle those whose outcome is
        final, watch the outcomes of this interval and the next, drive the devices, and write
        the owner's status."""
        current = self._interval_at(self.clock.now_ms())
        watchers: dict[int, asyncio.Task[None]] = {}
        while True:
            now = self.clock.now_ms()
            k = self._interval_at(now)
            try:
                while current < k:  # a stalled loop (a busy host) must not skip closing one
                    try:
                        concerns.ends.end(current)
                    finally:
                        # Its outcome no longer matters once ended; a gateway runs for months.
                        if (watcher := watchers.pop(current, None)) is not None:
                            watcher.cancel()
                        current += 1
                concerns.ends.settle()
                for j in (k, k + 1):
                    if j not in watchers and j >= self.state.first_traded:
                        watchers[j] = asyncio.create_task(self._watch_outcome(j),
                                                          name=f"{self.name}-outcome-{j}")
                battery, guard = concerns.battery, concerns.grid_point
                # The PV cap's rise first, for the battery to take; then the cap, checked
                # against the battery's new setpoint (gateway.home.grid_point).
                rise_w = 0 if guard is None else await guard.prepare(
                    battery=self.devices.battery,
                    battery_room_w=0 if battery is None else battery.room_w)
                if battery is None:
                    self.state.safe_reason = "no battery: nothing to dispatch"
                else:
                    await battery.step(k, now, self._period_ms, pv_rise_w=rise_w,
                                       pv_capped=guard is not None and guard.curtailing)
                if guard is not None:
                    await guard.step(battery_change_w=0 if battery is None else battery.change_w)
                await concerns.loads.step(k, now)
                self.write_status()
                self.faults.clear("controller")
            except Exception as exc:
                text = self.faults.record("controller", exc)
                await self._go_safe(concerns, f"control fault ({text})")
            await self.clock.sleep_until(now + self._period_ms)

    async def _go_safe(self, concerns: _Concerns, reason: str) -> None:
        """Battery idle and converter WAIT, each with its revert timer: what a device left alone
        comes to by itself, commanded now."""
        self.state.safe_reason = reason
        if concerns.battery is not None:
            await concerns.battery.go_safe()
        if concerns.dc is not None:
            await concerns.dc.go_safe(reason)

    async def _watch_outcome(self, k: int) -> None:
        assert self.agent is not None
        try:
            outcome = await self.agent.outcome(k)
        except MarketError as exc:
            log.warning("%s: no outcome for interval %d: %s", self.name, k, exc)
            return
        record = self.state.record(k)
        if not isinstance(record.outcome, Agreed):  # adopted late already: keep that
            record.outcome = outcome

    def status(self) -> Status:
        """What the owner sees now (``gridpeer status``, the dashboard, /metrics, HA)."""
        now = self.clock.now_ms()
        k = self._interval_at(now)
        concerns, agent, state = self._concerns, self.agent, self.state
        battery = None if self.devices.battery is None else self.devices.battery.fresh()
        meter = None if self.devices.meter is None else self.devices.meter.fresh()
        pv = None if self.devices.pv is None else self.devices.pv.fresh()
        following = state.records.get(k + 1)
        plan = None if following is None else following.plan
        meter_rejections = {} if concerns is None else dict(
            concerns.ends.meter_rejections + concerns.closer.meter_rejections)
        return Status(
            node=self.name, now_ms=now, interval=k,
            mode="safe" if state.safe_reason else "market", safe_reason=state.safe_reason,
            devices={d.name: d.health() for d in self.devices},
            battery=None if battery is None else BatteryStatus(
                soc_pct=None if math.isnan(battery.soc_pct) else battery.soc_pct,
                power_w=battery.power_w, setpoint_w=state.setpoint_w),
            meter=None if meter is None else MeterStatus(
                power_w=meter.power_w, import_wh=meter.import_wh, export_wh=meter.export_wh),
            pv=None if pv is None else PvStatus(power_w=pv.power_w),
            bid=None if plan is None or plan.side is None else BidStatus(
                interval=k + 1, side=plan.side, energy_wh=plan.energy_wh,
                limit_price=plan.limit_price, shifted_load_wh=plan.flex_wh),
            last_clearing=None if self.ledger is None else last_clearing(self.ledger),
            money_today=0 if concerns is None else concerns.money.since(now - now % DAY_MS),
            rejections={} if agent is None else dict(agent.rejections),
            reputation=None if agent is None else agent.reputation(self.name),
            meter_rejections=meter_rejections, control_faults=dict(self.faults.counts),
            device_holds={} if concerns is None or concerns.battery is None
            else dict(concerns.battery.holds),
            converter=None if concerns is None or concerns.dc is None else concerns.dc.status(),
            plan=None if concerns is None else _plan_status(concerns),
            v2g_refusals={} if concerns is None else concerns.loads.v2g_refusals(),
        )

    def write_status(self) -> None:
        """Atomically replace ``status.json`` so ``gridpeer status`` never reads half a file."""
        self.status().write(self.config.state_dir / "status.json")


def _plan_status(concerns: _Concerns) -> PlanStatus | None:
    """The trader's last plan as the owner sees it (None before the first)."""
    trader, guard = concerns.trader, concerns.grid_point
    outcome = trader.last_outcome
    if outcome is None:
        return None
    day = outcome.day
    return PlanStatus(
        source=outcome.source, fallback=outcome.reason,
        violations=() if day is None else tuple(
            f"{v.device} {v.kind} by {v.wh:.0f} Wh" for v in day.violations),
        fallbacks={} if trader.planner is None else dict(trader.planner.counters.fallbacks),
        pv_cap_w=None if guard is None else guard.cap_w)


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
