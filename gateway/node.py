"""The gateway service of one home: devices, EMS, market, dispatch and ledger in one TaskGroup.

Each concern is one long-lived task: a poller per device keeps readings fresh, the *trader* plans
each interval ahead of its gate closure and bids the residual, and the *controller* writes the
battery setpoint every control period from the agreed outcome (or safe mode) and closes each
interval into the ledger. The tasks share only the latest readings and the per-interval records
below; none of them waits on another's I/O.

Neither a device nor a bug stops the node. What a device reports only narrows the safety
envelope, and a report that leaves nothing to work with holds that device idle (logged with the
points, counted in ``device_holds``). An error nobody expected in the controller or the trader is
logged, counted in ``control_faults`` and answered with the safe state (battery idle, converter
WAIT, both with their revert timers; no bid for that interval): a gateway that stopped instead
would leave its devices on their last setpoints and, restarted by its service into the same
report, stop again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.aio import raise_if_cancelling
from gateway.clock import Clock
from gateway.closing import IntervalCloser
from gateway.config import DeviceConfig, GatewayConfig, MarketConfig, PreferencesConfig
from gateway.dc_dispatch import ConverterCommand, DcTarget, command_converter
from gateway.devices import (
    Battery,
    BatteryReading,
    ControllableLoad,
    DcDcConverter,
    DcDcReading,
    DevicePoller,
    LoadKind,
    LoadReading,
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
from gateway.devices.meter import verify_meter_reading
from gateway.devices.poller import R, Readable
from gateway.dispatch import Decision, IntervalTarget, decide
from gateway.ems import BatteryState, Plan, Preferences, plan_interval
from gateway.envelope import BatteryEnvelope, ConverterEnvelope
from gateway.flex_plan import load_job, parse_hhmm, plan_flex, rest_limit_w
from gateway.forecast import DAY_S, HomeForecaster
from gateway.ledger import Ledger, LedgerOwner
from gateway.lookahead import Ahead, horizon
from gateway.market.agent import MarketAgent, MarketError
from gateway.meterkey import load_meter_key
from gateway.pki import TlsFiles
from protocols.clearing import ClearingParams, Tariffs
from protocols.market import Abstained, Agreed, MeterKey, Timing
from protocols.messages import SignedEnvelope, curve_head
from protocols.metering import Rejected as MeterRejected
from protocols.settlement import SettlementFigures

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
class IntervalEnded:
    """``interval`` ended here and its closing meter reading was taken. Its
    :class:`IntervalClosed` (settlement and block) follows once the market's outcome is final:
    at once when it was agreed in time, up to an interval later when it was not (see
    :meth:`GatewayNode._settle_ended`); in interval order either way."""

    node: str
    interval: int


@dataclass(frozen=True, slots=True)
class SetpointWritten:
    node: str
    interval: int
    decision: Decision
    soc_pct: float


Event = BidMade | IntervalEnded | IntervalClosed | SetpointWritten


@dataclass(slots=True)
class _IntervalRecord:
    plan: Plan | None = None
    outcome: Agreed | Abstained | None = None
    meter_start_wh: float | None = None
    meter_start_checked: bool = False
    """The opening reading is the previous interval's closing one and its tag verified."""
    last_decision: Decision | None = None
    dc_start_wh: float | None = None
    """The converter's bus-side energy counter (+ into the home) when the interval opened."""


@dataclass(frozen=True, slots=True)
class _Ended:
    """An interval as it was measured when it ended, waiting for the market's final outcome."""

    interval: int
    record: _IntervalRecord | None
    metered_wh: int
    delivered_wh: int
    """What settles: the metered energy and the DC bus's part, 0 if the meter is not trusted."""
    bus_wh: int
    meter: MeterReading | None
    """The closing reading, None when it is not to be trusted (``meter_problem`` says why)."""
    meter_problem: str
    setpoint_w: int
    soc_pct: float


@dataclass(slots=True)
class NodeState:
    """What the dashboard and ``gridpeer status`` read; written only by the node's own tasks."""

    records: dict[int, _IntervalRecord] = field(default_factory=dict)
    setpoint_w: int = 0
    safe_reason: str = ""
    converter: ConverterCommand | None = None
    """The DC-DC converter's last command written (None without a converter)."""


def tls_files(market: MarketConfig) -> TlsFiles | None:
    """The broker TLS files of an ``mqtts://`` config (the config validated they come as three)."""
    if market.tls_ca is None or market.tls_cert is None or market.tls_key is None:
        return None
    return TlsFiles(ca=market.tls_ca, cert=market.tls_cert, key=market.tls_key)


def _polled(device: DeviceConfig, period_s: float, driver: Readable[R]) -> DevicePoller[R]:
    """``driver`` polled every ``period_s`` real seconds, stale as ``device`` configures."""
    return DevicePoller(name=device.name, driver=driver, period_s=period_s,
                        stale_after=device.stale_after)


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
        self.timing = Timing(epoch_ms=market.epoch_ms, length_ms=market.length_ms,
                             gate_ms=market.gate_ms, grace_ms=market.grace_ms)
        self._bid_lead_ms = int(market.length_ms * bid_lead_fraction)
        self.tariffs = Tariffs(
            retail_price=config.tariffs.retail_price, feed_in_price=config.tariffs.feed_in_price
        )
        env = config.envelope
        self.envelope = BatteryEnvelope(
            soc_min_pct=env.soc_min_pct, soc_max_pct=env.soc_max_pct,
            max_charge_w=env.max_charge_w, max_discharge_w=env.max_discharge_w,
            ramp_w_per_s=env.ramp_w_per_s,
        )
        self.converter_envelope = ConverterEnvelope(
            max_current_a=env.converter_max_a, bus_v_min=env.bus_v_min, bus_v_max=env.bus_v_max)
        self.update_preferences(config.preferences)
        self.state = NodeState()
        self._forecast_path = config.state_dir / "forecast.json"
        self.forecaster = self._load_forecaster()
        self._stack = contextlib.AsyncExitStack()
        self.meter: DevicePoller[MeterReading] | None = None
        self.battery: DevicePoller[BatteryReading] | None = None
        self.pv: DevicePoller[PvReading] | None = None
        self._battery_driver: Battery | None = None
        self.dcdc: DevicePoller[DcDcReading] | None = None
        """Polled by the controller itself, right before each command: the bus-side energy
        between two commands is then the measured current the previous one set."""
        self._dcdc_driver: DcDcConverter | None = None
        self._dc_wh = 0.0  # the converter's bus-side energy (+ into the home), integrated
        self._dc_last_ms: int | None = None
        self._dc_trip: tuple[int, str] | None = None  # (interval, why): WAIT until it ends
        self.loads: dict[str, DevicePoller[LoadReading]] = {}
        """Controllable loads (EV chargers, appliances) by device name."""
        self._load_drivers: dict[str, ControllableLoad] = {}
        self.agent: MarketAgent | None = None
        self.ledger: Ledger | None = None
        self._first_traded = 2**62  # set by the trader: no outcome is awaited before it
        self._meter_key: MeterKey | None = None
        self._meter_seq: int | None = None  # of the last reading whose tag verified
        #: Own meter readings refused for settlement, by reason ("meter-bad-tag", ...).
        self.meter_rejections: Counter[str] = Counter()
        #: Unexpected errors answered with the safe state, by "task/ExceptionType".
        self.control_faults: Counter[str] = Counter()
        self._last_fault: dict[str, str] = {}  # by task: logged once while it repeats
        #: Times a device's own report held it idle, by device name.
        self.device_holds: Counter[str] = Counter()
        self._battery_held = ""  # why the battery's report holds it idle now ("" if not)
        # (first interval, ledger height, money): the status is written every control period,
        # and re-reading the day's blocks each time was ~20 % of a gateway's control CPU.
        self._money_memo: tuple[int, int, int] | None = None
        self._closer: IntervalCloser | None = None
        self._ended: deque[_Ended] = deque()  # ended, not settled yet: oldest first

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
        self.ledger = Ledger.open(self.config.state_dir / "ledger.db",
                                  owner=LedgerOwner(key=self._key, certificate=self._certificate))
        self._stack.callback(self.ledger.close)

        def now_s() -> float:
            """The devices' physics runs on this clock (simulated time in a simulated world):
            the drivers' plausibility checks bound how fast a counter may rise with it."""
            return self.clock.now_ms() / 1000

        for device in self.config.devices:
            bus = await self._stack.enter_async_context(open_bus(device))
            found = await discover(bus, unit=device.unit)
            period = self.clock.real_seconds(device.poll_s * 1000)
            if device.kind == "meter":
                self.meter = _polled(device, period, Meter(bus=bus, device=found, now_s=now_s))
                if self.config.meter_key_file is not None:
                    self._meter_key = MeterKey(device_id=found.common.serial,
                                               key=load_meter_key(self.config.meter_key_file))
            elif device.kind == "battery":
                self._battery_driver = Battery(bus=bus, device=found, now_s=now_s)
                self.battery = _polled(device, period, self._battery_driver)
            elif device.kind == "pv":
                self.pv = _polled(device, period, PvInverter(bus=bus, device=found, now_s=now_s))
            elif device.kind == "dcdc":
                self._dcdc_driver = DcDcConverter(bus=bus, device=found, now_s=now_s)
                self.dcdc = _polled(device, period, self._dcdc_driver)
            elif device.kind == "load":
                load = self._load_drivers[device.name] = ControllableLoad(bus=bus, device=found,
                                                                         now_s=now_s)
                self.loads[device.name] = _polled(device, period, load)
        market = self.config.market
        self.agent = await self._stack.enter_async_context(MarketAgent(
            broker_url=market.broker, community=market.community, node=self.name,
            identity=self._key, certificate=self._certificate,
            authority_key_hex=market.authority_key, timing=self.timing,
            params=ClearingParams(tariffs=self.tariffs), clock=self.clock.now_ms,
            mechanism=market.mechanism, quorum=(market.quorum_num, market.quorum_den),
            tls=tls_files(market),
            meter_keys=None if self._meter_key is None else {self.name: self._meter_key},
            feeder=None if market.network is None else market.network.feeder(
                interval_s=market.interval_s),
            fees=None if market.network is None else market.network.fees(),
            energy_interval_ms=self.timing.length_ms,
        ))
        self._closer = IntervalCloser(node=self.name, agent=self.agent, ledger=self.ledger,
                                      tariffs=self.tariffs)

    async def run(self) -> None:
        assert self.agent is not None, "use `async with GatewayNode(...)` first"
        async with asyncio.TaskGroup() as tg:
            for poller in (self.meter, self.battery, self.pv, *self.loads.values()):
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
            try:
                await self._bid(k)
                self._last_fault.pop("trader", None)
            except Exception as exc:  # no bid for k: nothing promised, nothing to keep
                await self._fault("trader", exc)
            k += 1

    async def _bid(self, k: int) -> None:
        """Plan interval ``k``, bid the plan, and keep the offer until the gate."""
        assert self.agent is not None
        plan = self._plan(k)
        self._record(k).plan = plan
        if plan is not None and plan.side is not None:
            await self.agent.submit_bid(
                interval=k, side=plan.side, energy_wh=plan.energy_wh,
                limit_price=plan.limit_price, steps=plan.steps,
            )
        if plan is not None:
            self._on_event(BidMade(node=self.name, interval=k, plan=plan))
        if plan is not None and plan.side is not None:
            await self._keep_offer(k, plan)

    async def _keep_offer(self, k: int, offered: Plan) -> None:
        """Until interval ``k``'s gate, cut the offer down to what the devices can still keep.

        A bid stands until the gate closes, so a device lost after it was made (battery, meter,
        PV) would leave an offer out that the home cannot deliver: each time one more of them goes
        stale the interval is planned again, as a bid made now would be, and the offer replaced
        (a higher ``seq``) by the smaller of the two, or withdrawn when the new plan offers
        nothing on its side. Never raised: a larger offer is a new bid, not one kept. The last
        replacement is made ``grace`` before the gate, so a peer whose clock runs that much ahead
        still counts it.
        """
        assert self.agent is not None
        period_ms = int(min((d.poll_s for d in self.config.devices), default=1.0) * 1000)
        last_ms = self.timing.gate_close_ms(k) - self.timing.grace_ms
        lost = self._lost_devices()
        while (now := self.clock.now_ms()) < last_ms:
            await self.clock.sleep_until(min(now + period_ms, last_ms))
            gone = self._lost_devices()
            if gone <= lost:
                lost = gone  # one back again: the offer stays as cut
                continue
            lost = gone
            plan = self._plan(k)
            side = offered.side
            assert side is not None
            kept = plan.energy_wh if plan is not None and plan.side == side else 0
            if kept >= offered.energy_wh:
                continue
            cut = curve_head(offered.curve(), kept)  # its best Wh: a seller's cheapest first
            try:  # 0 Wh withdraws the offer
                await self.agent.submit_bid(interval=k, side=side, energy_wh=kept,
                                            limit_price=offered.limit_price, steps=cut)
            except MarketError as exc:
                log.warning("%s: offer for interval %d not replaced: %s", self.name, k, exc)
                return
            log.warning("%s: %s stale: %s offer for interval %d cut from %d to %d Wh", self.name,
                        ", ".join(sorted(gone)), side, k, offered.energy_wh, kept)
            if plan is not None and kept:
                offered = replace(plan, limit_price=offered.limit_price,
                                  steps=cut if len(cut) > 1 else ())
            else:
                offered = replace(plan or offered, side=None, energy_wh=0, limit_price=0,
                                  steps=())
            self._record(k).plan = None if plan is None else offered
            self._on_event(BidMade(node=self.name, interval=k, plan=offered))
            if not kept:
                return

    def _lost_devices(self) -> frozenset[str]:
        """The devices an offer counts on that are stale now (or, the battery, held), by kind."""
        pollers = {"meter": self.meter, "battery": self.battery, "pv": self.pv}
        lost = {kind for kind, poller in pollers.items() if poller is not None and poller.stale}
        battery = self._fresh(self.battery)
        if battery is not None and self._battery_envelope(battery).held:
            lost.add("battery")
        return frozenset(lost)

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
        state = None  # a battery held idle by its own report has nothing to offer
        if (battery is not None and battery.capacity_wh
                and not self._battery_envelope(battery).held):
            state = BatteryState(
                capacity_wh=int(battery.capacity_wh), soc_pct=battery.soc_pct,
                max_charge_w=min(int(battery.max_charge_w), self.envelope.max_charge_w),
                max_discharge_w=min(int(battery.max_discharge_w), self.envelope.max_discharge_w),
            )
        length_s = self.timing.length_ms / 1000
        pv_wh, load_wh = self.forecaster.forecast_wh(
            start_s=self.timing.start_ms(k) / 1000 % DAY_S, length_s=length_s
        )
        block_s, count = horizon(length_s)
        ahead: Ahead | None = Ahead(block_s=block_s, blocks=self.forecaster.learned_ahead(
            start_s=self.timing.start_ms(k + 1) / 1000 % DAY_S, block_s=block_s, count=count))
        if self.pv is not None and self._fresh(self.pv) is None:
            # A silent inverter may have tripped: its output is not ours to offer, now or as
            # the sun that would refill energy sold from the battery (self-consumption alone).
            pv_wh, ahead = 0, None
        return plan_interval(
            pv_wh=pv_wh, load_wh=load_wh, battery=state, prefs=self.prefs, tariffs=self.tariffs,
            interval_s=length_s, flex=self._plan_loads(k, surplus_wh=pv_wh - load_wh),
            ahead=ahead,
        )

    def _plan_loads(self, k: int, *, surplus_wh: int) -> dict[str, int]:
        """Energy each fresh, connected load runs in interval ``k`` (``gateway/flex_plan.py``).

        A load's need is taken as of the start of ``k``: what it owes now less what it draws
        until then at its present power.
        """
        start_ms = self.timing.start_ms(k)
        ahead_h = max(0, start_ms - self.clock.now_ms()) / 3_600_000
        jobs = []
        for name, poller in self.loads.items():
            reading: LoadReading | None = self._fresh(poller)
            if reading is None or not reading.connected:
                continue
            job = load_job(
                name, need_wh=reading.need_wh - math.floor(reading.power_w * ahead_h),
                max_w=reading.max_w, deadline_min=reading.deadline_min,
                ready_by_min=self._ready_by(reading), time_of_day_s=start_ms / 1000 % DAY_S)
            if job is not None:
                jobs.append(job)
        length_s = self.timing.length_ms / 1000
        return plan_flex(jobs, slot_s=length_s, surplus_wh=surplus_wh, period_s=length_s,
                         margin_s=length_s * _FLEX_MARGIN_INTERVALS)

    def _ready_by(self, reading: LoadReading) -> int | None:
        """The owner's ready-by applies to EV chargers."""
        return self.prefs.ev_ready_by_min if reading.kind == LoadKind.EVSE else None

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
            try:
                while current < k:  # a stalled loop (a busy host) must not skip closing one
                    try:
                        self._end_interval(current)
                    finally:
                        # Its outcome no longer matters once closed; a gateway runs for months.
                        if (watcher := watchers.pop(current, None)) is not None:
                            watcher.cancel()
                        current += 1
                self._settle_ended()
                for j in (k, k + 1):
                    if j not in watchers and j >= self._first_traded:
                        watchers[j] = asyncio.create_task(self._watch_outcome(j))
                await self._control_step(k, now, period_ms)
                await self._control_loads(k, now)
                self.write_status()
                self._last_fault.pop("controller", None)
            except Exception as exc:
                await self._fault("controller", exc)
            await self.clock.sleep_until(now + period_ms)

    async def _fault(self, task: str, exc: Exception) -> None:
        """An error nobody expected in ``task`` ("controller" or "trader"): counted, logged with
        its traceback (once while the same one repeats), and the controller's answered with the
        safe state. Never raises: the node's other tasks keep running."""
        raise_if_cancelling(exc)
        kind = f"{task}/{type(exc).__name__}"
        self.control_faults[kind] += 1
        text = f"{kind}: {exc}"
        if text != self._last_fault.get(task):
            log.error("%s: unexpected error in the %s, safe state: %s", self.name, task, text,
                      exc_info=exc)
        self._last_fault[task] = text
        if task == "controller":
            await self._go_safe(f"control fault ({text})")

    async def _go_safe(self, reason: str) -> None:
        """Battery idle and converter WAIT, each with its revert timer: what a device left alone
        comes to by itself, commanded now. Best effort: a write that fails is logged, and the
        revert timer of the last command written still holds."""
        self.state.safe_reason = reason
        revert_s = self.config.envelope.revert_s
        try:
            if self._battery_driver is not None:
                self.state.setpoint_w = await self._battery_driver.set_power(
                    watts=0, revert_s=revert_s)
        except Exception as exc:
            raise_if_cancelling(exc)
            log.warning("%s: battery not set idle: %s", self.name, exc)
        try:
            if self._dcdc_driver is not None:
                await self._dcdc_driver.wait(revert_s=revert_s)
                self.state.converter = ConverterCommand(mode="wait", reason=reason,
                                                        safe_reason=reason)
        except Exception as exc:
            raise_if_cancelling(exc)
            log.warning("%s: converter not set to WAIT: %s", self.name, exc)

    async def _watch_outcome(self, k: int) -> None:
        assert self.agent is not None
        try:
            outcome = await self.agent.outcome(k)
        except MarketError as exc:
            log.warning("%s: no outcome for interval %d: %s", self.name, k, exc)
            return
        record = self._record(k)
        if not isinstance(record.outcome, Agreed):  # adopted late already: keep that
            record.outcome = outcome

    async def _control_step(self, k: int, now_ms: int, period_ms: int) -> None:
        if self._battery_driver is None:
            self.state.safe_reason = "no battery: nothing to dispatch"
            return
        meter = self._fresh(self.meter)
        battery = self._fresh(self.battery)
        pv = self._fresh(self.pv)
        record = self._record(k)
        dc = await self._control_converter(k, period_ms, record, meter, battery)
        if battery is None:
            self.state.safe_reason = "battery stale: its revert timer returns it to idle"
            return
        envelope = self._ac_envelope(battery)
        self._note_hold(envelope.held)
        # A battery that does not measure its power (713 without 802) runs what it holds.
        battery_w = battery.setpoint_w if battery.power_w is None else battery.power_w
        if meter is not None:
            pv_w = -pv.power_w if pv is not None else 0
            self.forecaster.observe(
                time_of_day_s=now_ms / 1000 % DAY_S, pv_w=pv_w,
                load_w=meter.power_w - battery_w + pv_w - self._shifted_w(),
            )
            net_wh = meter.import_wh - meter.export_wh
            if record.meter_start_wh is None:
                record.meter_start_wh = net_wh
        target, reason = self._over_dc_bus(*self._target(record, meter), record, dc)
        if envelope.held:
            target, reason = None, f"battery held idle: {envelope.held}"
        elapsed_s = (now_ms - self.timing.start_ms(k)) / 1000
        decision = decide(
            target=target, elapsed_s=elapsed_s,
            metered_wh=0.0 if meter is None or record.meter_start_wh is None
            else meter.import_wh - meter.export_wh - record.meter_start_wh,
            meter_w=meter.power_w if meter is not None else battery_w,
            battery_w=battery_w, soc_pct=battery.soc_pct,
            previous_w=self.state.setpoint_w, dt_s=period_ms / 1000,
            envelope=envelope, safe_reason=reason,
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
        # The meter follows the *cleared* position, not the plan's residual: what was not sold
        # stays home (the battery stores it for the evening rather than exporting it at feed-in),
        # and the battery never drains to export more than a neighbour bought.
        position = record.outcome.position
        cleared = 0 if position is None else position.bought_wh - position.sold_wh
        return IntervalTarget(meter_wh=cleared, length_s=self.timing.length_ms / 1000), ""

    # -- the DC-DC converter: the bus side of the cleared position (gateway/dc_dispatch.py) ----

    @property
    def dc_master(self) -> bool:
        """Whether this node's converter holds the DC bus (every member's config names it)."""
        return self.config.dc_bus is not None and self.config.dc_bus.master == self.name

    async def _control_converter(
        self, k: int, period_ms: int, record: _IntervalRecord, meter: MeterReading | None,
        battery: BatteryReading | None,
    ) -> ConverterCommand | None:
        """Poll and command the converter for this control period (None without one).

        Polled here, right before the command, rather than by a free-running poller: the power
        read is then the current the last command set, which held from that command's write until
        this one's, and that is the span it is integrated over (``delivered``, and what settles
        the interval's delivery over the bus): up to the sample before the command, the rest once
        the command is written. Counting from sample to sample instead charged the new current
        for the time the write took, which on a busy host at 600x is most of a control period
        (20 % off over a day). Every command, WAIT included, carries the revert time.
        """
        driver, poller, bus = self._dcdc_driver, self.dcdc, self.config.dc_bus
        if driver is None or poller is None or bus is None:
            return None
        reading = await poller.poll_once()
        # The step's own clock may be a while ago on a busy host: the sample's time is now.
        sampled_ms = self.clock.now_ms()
        if record.dc_start_wh is None:
            record.dc_start_wh = self._dc_wh
        self._integrate_dc(reading, sampled_ms)
        latched = self._dc_trip[1] if self._dc_trip and self._dc_trip[0] == k else ""
        target, delivered_wh, remaining_s, reason = self._dc_aim(k, sampled_ms, period_ms, meter)
        command = command_converter(
            master=self.dc_master, target=target, remaining_s=remaining_s,
            delivered_wh=delivered_wh, reading=reading,
            soc_pct=None if battery is None else battery.soc_pct,
            envelope=self.converter_envelope,
            battery=self.envelope if battery is None else self._battery_envelope(battery),
            bus_setpoint_v=bus.voltage_v, dt_s=period_ms / 1000, latched_trip=latched,
            safe_reason=reason,
        )
        if command.trip and not latched:
            self._dc_trip = (k, command.trip)
            log.warning("%s: %s; every converter waits until interval %d ends", self.name,
                        command.safe_reason, k)
        revert_s = self.config.envelope.revert_s
        try:
            if command.mode == "cc":
                await driver.set_current(amps=command.current_a, revert_s=revert_s)
            elif command.mode == "cv":
                await driver.hold_voltage(volts=command.voltage_v, revert_s=revert_s,
                                          limit_a=command.limit_a)
            else:
                await driver.wait(revert_s=revert_s)
        except (DeviceError, ValueError) as exc:
            log.warning("%s: converter %s not written: %s", self.name, command.mode, exc)
            command = ConverterCommand(mode="wait", reason=f"command not written: {exc}",
                                       safe_reason=f"converter command not written: {exc}")
        self._integrate_dc(reading, self.clock.now_ms())  # the old current ran until now
        previous = self.state.converter
        if previous is None or (previous.mode, previous.reason) != (command.mode, command.reason):
            log.info("%s: converter %s (%s)", self.name, command.mode.upper(), command.reason)
        self.state.converter = command
        return command

    def _integrate_dc(self, reading: DcDcReading | None, now_ms: int) -> None:
        """Add the bus-side energy of ``reading``'s power since the last integration."""
        if reading is None:
            return  # the next reading covers the gap
        if self._dc_last_ms is not None:
            self._dc_wh += reading.power_w * (now_ms - self._dc_last_ms) / 3_600_000
        self._dc_last_ms = now_ms

    def _dc_aim(
        self, k: int, now_ms: int, period_ms: int, meter: MeterReading | None
    ) -> tuple[DcTarget | None, float, float, str]:
        """The position the current commanded now counts towards, the energy already counted
        towards it, the time left to count, and why there is no position (if so).

        The energy a command moves is measured at the next control step and counted in that
        step's interval, as the meter reading of an interval's first step closes the interval
        before. So a command counts towards ``k`` only while a later step still falls in ``k``;
        the last step of ``k`` already carries ``k + 1``'s position.
        """
        record = self._record(k)
        later_steps = math.ceil((self.timing.start_ms(k + 1) - now_ms) / period_ms) - 1
        if later_steps >= 1 and record.dc_start_wh is not None:
            j, delivered, left_ms = k, self._dc_wh - record.dc_start_wh, later_steps * period_ms
        else:
            j, delivered, left_ms = k + 1, 0.0, self.timing.length_ms
        aimed = self._record(j)
        target, reason = self._target(aimed, meter)
        position = None if target is None else self._dc_target(aimed)
        return position, delivered, left_ms / 1000, reason

    def _dc_target(self, record: _IntervalRecord) -> DcTarget:
        """An agreed position's P2P energy, which on a DC-bus community flows over the bus."""
        assert isinstance(record.outcome, Agreed)
        position = record.outcome.position
        return DcTarget(energy_wh=0 if position is None else position.bought_wh - position.sold_wh)

    def _over_dc_bus(
        self, target: IntervalTarget | None, reason: str, record: _IntervalRecord,
        dc: ConverterCommand | None,
    ) -> tuple[IntervalTarget | None, str]:
        """The meter's target when the P2P energy goes over the DC bus: only what the grid
        balances passes the meter (the cleared position less what was traded: nothing). A
        converter waiting on a doubt puts the home into safe mode too: self-consumption, nothing
        promised to anyone."""
        if dc is None:
            return target, reason
        if dc.safe_reason:
            return None, dc.safe_reason
        if target is None:
            return None, reason
        traded = self._dc_target(record).energy_wh
        return IntervalTarget(meter_wh=target.meter_wh - traded, length_s=target.length_s), reason

    def _note_hold(self, held: str) -> None:
        """Log and count each time the battery's own report starts holding it idle, and say when
        it lets go again."""
        if held == self._battery_held:
            return
        name = self.battery.name if self.battery is not None else "battery"
        if held:
            self.device_holds[name] += 1
            log.warning("%s: %s held idle: %s", self.name, name, held)
        else:
            log.info("%s: %s released: its report leaves a window to work in again", self.name,
                     name)
        self._battery_held = held

    def _battery_envelope(self, battery: BatteryReading) -> BatteryEnvelope:
        return self.envelope.within_device(
            max_charge_w=battery.max_charge_w, max_discharge_w=battery.max_discharge_w,
            soc_min_pct=battery.soc_min_pct, soc_max_pct=battery.soc_max_pct,
        )

    def _ac_envelope(self, battery: BatteryReading) -> BatteryEnvelope:
        """The battery inverter's envelope: the device's, less what the converter's port takes
        of the same cells; the bus master also keeps its SoC off the window's edges, so its
        converter can always absorb the bus's residual both ways."""
        env = self._battery_envelope(battery)
        headroom = self._master_headroom_pct
        if env.soc_max_pct - env.soc_min_pct > 2 * headroom + 1:
            env = replace(env, soc_min_pct=env.soc_min_pct + headroom,
                          soc_max_pct=env.soc_max_pct - headroom)
        # The owner's reserve holds in every mode, safe mode included: kept for a power cut, it
        # is not there for everyday self-consumption either (and a no-market baseline that
        # could use it while the market could not would not be a fair comparison).
        if env.soc_min_pct < self.prefs.reserve_pct < env.soc_max_pct:
            env = replace(env, soc_min_pct=self.prefs.reserve_pct)
        command, reading = self.state.converter, self._fresh(self.dcdc)
        if command is None or reading is None:
            return env
        port_w = {"cc": round(command.current_a * reading.bus_voltage_v),
                  "cv": reading.power_w}.get(command.mode, 0)
        return env.beside(port_w)

    @property
    def _master_headroom_pct(self) -> float:
        """How far inside the SoC window the bus master plans and charges its battery itself."""
        return self.config.envelope.master_headroom_pct if self.dc_master else 0.0

    def _bus_delivered_wh(self, record: _IntervalRecord) -> int:
        """Energy the converter moved over the bus in ``record``'s interval so far, at the bus
        side (+ drawn into the home): the DC part of the delivery to settle, beside the meter's.
        Up to the last control step, like the meter's reading that closes the interval."""
        if record.dc_start_wh is None:
            return 0
        return round(self._dc_wh - record.dc_start_wh)

    def _shifted_w(self) -> int:
        """What the controllable loads draw now: load the forecaster must not learn as base load
        (it is shifted by the plan, not repeated at the same time tomorrow)."""
        readings = (self._fresh(poller) for poller in self.loads.values())
        return sum(r.power_w for r in readings if r is not None)

    async def _control_loads(self, k: int, now_ms: int) -> None:
        """Write each fresh load's power limit for the rest of interval ``k``, with a revert time.

        The plan's share of the rest of the interval, raised to what the load's deadline forces
        on this reading (so a plan made ahead on an estimate cannot miss it). Without a bid for
        ``k`` (not trading, or started within it) the loads are planned now, the same way. A
        stale load gets nothing: its revert timer returns it to its own default.
        """
        if not self._load_drivers:
            return
        record = self.state.records.get(k)
        length_s = self.timing.length_ms / 1000
        rest_s = (self.timing.start_ms(k + 1) - now_ms) / 1000
        if record is not None and record.plan is not None:
            runs = dict(record.plan.flex)
        else:
            pv_wh, load_wh = self.forecaster.forecast_wh(
                start_s=self.timing.start_ms(k) / 1000 % DAY_S, length_s=length_s)
            runs = self._plan_loads(k, surplus_wh=pv_wh - load_wh)
        for name, driver in self._load_drivers.items():
            reading: LoadReading | None = self._fresh(self.loads[name])
            if reading is None:
                continue
            limit = 0
            job = load_job(name, need_wh=reading.need_wh, max_w=reading.max_w,
                           deadline_min=reading.deadline_min,
                           ready_by_min=self._ready_by(reading),
                           time_of_day_s=now_ms / 1000 % DAY_S) if reading.connected else None
            if job is not None:
                planned = runs.get(name, 0)
                limit = rest_limit_w(job, planned_wh=round(planned * rest_s / length_s),
                                     rest_s=rest_s, interval_s=length_s,
                                     margin_s=length_s * _FLEX_MARGIN_INTERVALS)
            try:
                await driver.set_limit(watts=limit, revert_s=self.config.envelope.revert_s)
            except (DeviceError, ValueError) as exc:
                log.warning("%s: load %s limit not written: %s", self.name, name, exc)

    def update_preferences(self, prefs: PreferencesConfig) -> None:
        """Apply the owner's new preferences from the next bid on (already validated)."""
        self.prefs = Preferences(
            min_sell_price=prefs.min_sell_price, max_buy_price=prefs.max_buy_price,
            reserve_pct=max(prefs.reserve_pct,
                            self.config.envelope.soc_min_pct + self._master_headroom_pct),
            soc_max_pct=self.config.envelope.soc_max_pct - self._master_headroom_pct,
            ev_ready_by_min=None if prefs.ev_ready_by is None else parse_hhmm(prefs.ev_ready_by),
        )
        log.info("%s: preferences updated: %s", self.name, prefs.model_dump())

    def snapshot(self) -> dict[str, Any]:
        """What the owner wants to see now, as JSON-able data (status file, dashboard, API)."""
        now = self.clock.now_ms()
        k = self._interval_at(now)
        devices = {}
        for poller in (self.meter, self.battery, self.pv, self.dcdc, *self.loads.values()):
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
                "limit_price": next_plan.limit_price, "shifted_load_wh": next_plan.flex_wh,
            },
            "last_clearing": None if last is None else {
                "interval": last.interval, "status": last.status,
                "price": last.content.get("price"),
                "outcome": last.content.get("outcome"),
            },
            "money_today": self._money_since(now - now % 86_400_000),
            "rejections": dict(self.agent.rejections) if self.agent is not None else {},
            "reputation": None if self.agent is None else self.agent.reputation(self.name),
            "meter_rejections": dict(self.meter_rejections + (
                self._closer.meter_rejections if self._closer is not None else Counter())),
            "control_faults": dict(self.control_faults),
            "device_holds": dict(self.device_holds),
            "converter": self._converter_status(),
        }

    def _converter_status(self) -> dict[str, Any] | None:
        command, reading = self.state.converter, self._fresh(self.dcdc)
        if command is None:
            return None
        return {
            "role": "master" if self.dc_master else "member", "mode": command.mode,
            "current_a": command.current_a, "voltage_v": command.voltage_v,
            "reason": command.reason, "limits": list(command.limits),
            "bus_v": None if reading is None else reading.bus_voltage_v,
            "measured_a": None if reading is None else reading.current_a,
        }

    def _money_since(self, start_ms: int) -> int:
        """Net money (µ, + = paid) of the ledger blocks since ``start_ms``."""
        if self.ledger is None:
            return 0
        first = (start_ms - self.timing.epoch_ms) // self.timing.length_ms
        height = self.ledger.height()
        if self._money_memo is not None and self._money_memo[:2] == (first, height):
            return self._money_memo[2]
        money = sum(
            int((b.content.get("outcome") or {}).get("money", 0))
            for b, _ in self.ledger.blocks(from_interval=first)
        )
        self._money_memo = (first, height, money)
        return money

    def write_status(self) -> None:
        """Atomically replace ``status.json`` so ``gridpeer status`` never reads half a file."""
        path = self.config.state_dir / "status.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot(), indent=1))
        os.replace(tmp, path)

    def _end_interval(self, k: int) -> None:
        """Take interval ``k``'s closing meter reading and hand it to ``k + 1``; ``k`` is settled
        by :meth:`_settle_ended`.

        The reading that closes one interval opens the next, so no metered Wh falls between two.
        With a meter key, a delivery counts only if both readings' tags verified; otherwise the
        interval is settled with the grid as undelivered (``delivered_wh`` 0) and, having no
        reading to back it, publishes no settlement. On a DC bus the delivery also counts what
        the converter moved over the bus (``bus_wh``): the trade flows there, not through the
        meter.
        """
        record = self.state.records.pop(k, None)
        meter = self._fresh(self.meter)
        metered = 0
        end_checked = False
        if meter is not None:
            net_wh = meter.import_wh - meter.export_wh
            if record is not None and record.meter_start_wh is not None:
                metered = round(net_wh - record.meter_start_wh)
            end_checked = self._meter_checked(k, meter)
            following = self._record(k + 1)
            following.meter_start_wh = net_wh
            following.meter_start_checked = end_checked
        trusted = self._meter_key is None or (
            end_checked and record is not None and record.meter_start_checked)
        bus = self._bus_delivered_wh(record) if record is not None else 0
        self._save_forecaster()
        battery = self._fresh(self.battery)
        self._ended.append(_Ended(
            interval=k, record=record, metered_wh=metered,
            delivered_wh=metered + bus if trusted else 0, bus_wh=bus,
            meter=meter if trusted else None,
            meter_problem="" if trusted else "meter reading not verified",
            setpoint_w=self.state.setpoint_w,
            soc_pct=battery.soc_pct if battery is not None else float("nan")))
        self._on_event(IntervalEnded(node=self.name, interval=k))

    def _settle_ended(self) -> None:
        """Settle the ended intervals whose outcome is final, oldest first, each into its block.

        An interval waits while the market may still agree or adopt it (:meth:`_outcome`), and
        the ones after it wait behind it, so blocks stay in interval order. The settlement and
        the block are :class:`IntervalCloser`'s.
        """
        while self._ended:
            ended = self._ended[0]
            k = ended.interval
            outcome: Agreed | Abstained | None = None
            if k >= self._first_traded:
                outcome = self._outcome(ended)
                if outcome is None:
                    return
            self._ended.popleft()
            figures = None
            if outcome is not None and self._closer is not None:
                figures = self._closer.close(
                    k, outcome, delivered_wh=ended.delivered_wh, meter=ended.meter,
                    bus_wh=ended.bus_wh, meter_problem=ended.meter_problem).figures
            self._on_event(IntervalClosed(
                node=self.name, interval=k, outcome=outcome, metered_wh=ended.metered_wh,
                setpoint_w=ended.setpoint_w, soc_pct=ended.soc_pct, settlement=figures,
                in_market=k >= self._first_traded,
            ))

    def _outcome(self, ended: _Ended) -> Agreed | Abstained | None:
        """What a traded interval that ended settles against: the result it dispatched, else the
        one the agent agreed or adopted, else, once the agent can no longer agree or adopt it,
        an abstention (settled with the grid); None while it still can.

        The peers settle their side of this node's trades against the quorum's result whether or
        not it heard that result in time, so settling an interval as abstained before the agent
        is done with it would leave their P2P payments unmatched. A result known only after the
        interval ended, or heard too late to dispatch, is settled only (``late``): the interval
        ran in safe mode. Dispatching a position from the middle of its interval would squeeze
        all of it into the time left, and on a DC bus the members that adopted it at once push
        more current than the master can absorb (the all-day dc-bus-cluster test tripped the bus
        at 380.1 V that way).
        """
        k, record = ended.interval, ended.record
        dispatched = record.outcome if record is not None else None
        if isinstance(dispatched, Agreed) or self.agent is None:
            return dispatched or Abstained(interval=k, reason="no-outcome")
        agreed = self.agent.agreed(k)
        if agreed is not None:
            return replace(agreed, late=True)
        if self.agent.undecided(k):
            return None
        # No quorum was heard (broker away, commitments lost): the interval ran in safe mode and
        # its metered energy is settled with the grid.
        return dispatched or Abstained(interval=k, reason="no-outcome")

    def _meter_checked(self, k: int, meter: MeterReading) -> bool:
        """Whether the meter's tag on ``meter`` verifies (True when no key is held to check it);
        a refused reading is counted and logged, never raised."""
        key = self._meter_key
        if key is None:
            return True
        checked = verify_meter_reading(meter, device_id=key.device_id, key=key.key,
                                       last_seq=self._meter_seq)
        if isinstance(checked, MeterRejected):
            self.meter_rejections[f"meter-{checked.reason}"] += 1
            log.warning("%s: meter reading closing interval %d refused (%s): the interval "
                        "settles with the grid as undelivered", self.name, k, checked.reason)
            return False
        self._meter_seq = checked.seq
        return True


_FLEX_MARGIN_INTERVALS = 1
"""A shifted load is planned to be done this many intervals before it is due: room for a
forecast that was wrong, a device that missed a poll, a plan made before the car was plugged in."""


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

