"""The home's devices: one record per configured device, built through the driver registry.

The node iterates these records (to poll them, to report their health, to see which an offer
counts on) and never names a device in an attribute of its own. The controllers take the devices
of the kinds they drive from :class:`HomeDevices`, typed by driver: a battery controller gets the
battery's driver and poller, the loads controller every load's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, cast

from gateway.aio import raise_if_cancelling
from gateway.clock import Clock, monotonic
from gateway.config import DeviceConfig
from gateway.devices import (
    Battery,
    BatteryReading,
    ControllableLoad,
    DcDcConverter,
    DcDcReading,
    DeviceError,
    DevicePoller,
    DiscoveredDevice,
    LoadReading,
    Meter,
    MeterReading,
    ModbusBus,
    PvInverter,
    PvReading,
    Readable,
    discover,
)
from gateway.devices.capability import Described
from gateway.devices.registry import DRIVERS, open_bus
from gateway.home.adoption import Adoption, Phase
from gateway.home.status import DeviceHealth
from protocols.market import Timing

log = logging.getLogger(__name__)

D = TypeVar("D")
R = TypeVar("R")


class NotAdopted(DeviceError):
    """The device is configured but not in the home (yet): nothing is read from it or written."""


class Device(Generic[D, R]):
    """One configured device: its config entry, its bus, how it comes into the home
    (:class:`~gateway.home.adoption.Adoption`), and once adopted what discovery found, its
    driver, and the poller that keeps its latest reading.

    ``now_s``: the clock the device's physics runs on, for its driver's plausibility checks
    (None: the driver's default, no bound on how fast its counters move).

    Until it is adopted it has no reading (``fresh()`` is None, its poller stale), so every
    concern treats it as a stale device: nothing offered from it, nothing commanded.
    """

    def __init__(self, *, config: DeviceConfig, bus: ModbusBus, period_s: float,
                 now_s: Callable[[], float] | None = None,
                 monotonic: Callable[[], float] = monotonic) -> None:
        self.config = config
        self.bus = bus
        self.adoption = Adoption()
        self._now_s = now_s
        self._monotonic = monotonic
        self._found: DiscoveredDevice | None = None
        self._driver: D | None = None
        self.poller: DevicePoller[R] = DevicePoller(  # failing, polled at most every 30 s
            name=config.name, driver=cast(Readable[R], self), period_s=period_s,
            stale_after=config.stale_after, backoff_max_s=max(30.0, period_s))

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def adopted(self) -> bool:
        return self.adoption.phase is Phase.ADOPTED

    @property
    def found(self) -> DiscoveredDevice:
        """What discovery found (``NotAdopted`` before the device is in the home)."""
        if self._found is None or not self.adopted:
            raise NotAdopted(f"{self.name}: {self.adoption.reason or 'not adopted yet'}")
        return self._found

    @property
    def driver(self) -> D:
        """The device's driver (``NotAdopted`` before the device is in the home)."""
        if self._driver is None or not self.adopted:
            raise NotAdopted(f"{self.name}: {self.adoption.reason or 'not adopted yet'}")
        return self._driver

    def health(self) -> DeviceHealth:
        """How the device is doing, for the owner's status: its polls, or why it is not in
        the home and when it is tried again."""
        return DeviceHealth.of(self.poller, self.adoption, self._monotonic())

    @property
    def refused(self) -> str | None:
        """Why the device cannot take a command its driver has, as of its last reading (the
        first such command); None when it takes them all, or is not in the home."""
        if self._driver is None or not self.adopted:
            return None
        commands = cast(Described, self._driver).commands
        return next((f"{c.what}: {c.refused}" for c in commands if c.refused), None)

    async def read(self) -> R:
        """One reading through the driver (what the poller calls)."""
        reading: R = await cast(Readable[R], self.driver).read()
        return reading

    def fresh(self) -> R | None:
        """The latest reading, None when it must not be acted on (stale, or not adopted)."""
        return None if self.poller.stale or not self.adopted else self.poller.latest

    async def attempt(self, *, interval: int, trading: bool) -> bool:
        """Discover the device and build its driver; whether it answered drivable. A failure is
        recorded in ``adoption`` (with the wait until the next try) and logged when its reason
        changes, never raised."""
        try:
            found = await discover(self.bus, unit=self.config.unit)
            driver = DRIVERS[self.config.kind](bus=self.bus, device=found, now_s=self._now_s)
        except Exception as exc:  # a device's reply, however odd, never stops the gateway
            raise_if_cancelling(exc)
            before = self.adoption.reason
            wait = self.adoption.failed(self._monotonic(), exc)
            if self.adoption.reason != before:
                log.warning("%s (%s at %s unit %d) not in the home: %s; trying again in %g s",
                            self.name, self.config.kind, self.bus, self.config.unit,
                            self.adoption.reason, wait)
            return False
        self._found, self._driver = found, cast(D, driver)
        self.adoption.answered(interval, trading=trading)
        if not self.adopted:
            log.info("%s answered: adopted from interval %s", self.name,
                     self.adoption.adopt_from)
        return True

    async def run(self, *, clock: Clock, timing: Timing, poll: bool = True) -> None:
        """Until cancelled: try the device when due while it is not in the home, adopt it at
        the start of the interval it is adopted from, then (``poll``) keep its reading fresh."""
        def interval() -> int:
            return (clock.now_ms() - timing.epoch_ms) // timing.length_ms

        while self.adoption.phase is Phase.WAITING:
            await asyncio.sleep(max(0.0, self.adoption.next_try_s - self._monotonic()))
            await self.attempt(interval=interval(), trading=True)
        while not self.adopted:
            assert self.adoption.adopt_from is not None
            await clock.sleep_until(timing.start_ms(self.adoption.adopt_from))
            if self.adoption.adopt(interval()):
                log.warning("%s adopted: in the home from interval %d", self.name, interval())
        if poll:
            await self.poller.run()


class HomeDevices:
    """Every configured device in the config's order, by name, and by the driver that runs it.

    The controllers drive one meter, battery, PV inverter and converter, each the last of its
    kind in the config (the config allows one meter and one converter), and every load; a
    device not adopted yet is among them, stale until it is.
    """

    def __init__(self, devices: tuple[Device[Any, Any], ...] = ()) -> None:
        self._devices = devices
        self.meter: Device[Meter, MeterReading] | None = self._driven(Meter)
        self.battery: Device[Battery, BatteryReading] | None = self._driven(Battery)
        self.pv: Device[PvInverter, PvReading] | None = self._driven(PvInverter)
        self.converter: Device[DcDcConverter, DcDcReading] | None = self._driven(DcDcConverter)
        self.loads: tuple[Device[ControllableLoad, LoadReading], ...] = self._all(
            ControllableLoad)

    def __iter__(self) -> Iterator[Device[Any, Any]]:
        return iter(self._devices)

    def __getitem__(self, name: str) -> Device[Any, Any]:
        for device in self._devices:
            if device.name == name:
                return device
        raise KeyError(name)

    def _all(self, driver: type[D]) -> tuple[Device[D, Any], ...]:
        wanted: object = driver
        return tuple(d for d in self._devices if DRIVERS[d.config.kind] is wanted)

    def _driven(self, driver: type[D]) -> Device[D, Any] | None:
        return next(reversed(self._all(driver)), None)


async def open_devices(devices: tuple[DeviceConfig, ...], *, clock: Clock,
                       stack: contextlib.AsyncExitStack) -> HomeDevices:
    """Open one bus per URL on ``stack`` and try each device once, in the config's order: one
    that answers drivable is in the home from the start, any other is reported and retried by
    :meth:`Device.run` (the gateway starts either way).

    Devices behind one URL (unit ids behind one TCP address, or one RS-485 line) share its bus,
    so their requests queue on one link instead of racing on several; the bus waits the longest
    ``timeout_s`` and ``first_timeout_s`` its devices are configured with. The drivers'
    plausibility checks bound how fast a counter may rise with ``clock``: the devices' physics
    runs on it (simulated time in a simulated world).
    """
    def now_s() -> float:
        return clock.now_ms() / 1000

    buses: dict[str, ModbusBus] = {}
    for url in dict.fromkeys(d.url for d in devices):
        sharing = [d for d in devices if d.url == url]
        timeout_s = max(d.timeout_s for d in sharing)
        first_s = max(d.first_timeout_s or d.timeout_s for d in sharing)
        buses[url] = await stack.enter_async_context(
            open_bus(url, timeout_s=timeout_s, first_timeout_s=max(first_s, timeout_s)))
    records: list[Device[Any, Any]] = []
    for config in devices:
        device: Device[Any, Any] = Device(
            config=config, bus=buses[config.url], now_s=now_s,
            period_s=clock.real_seconds(config.poll_s * 1000))
        await device.attempt(interval=0, trading=False)
        records.append(device)
    return HomeDevices(tuple(records))


def control_period_ms(devices: tuple[DeviceConfig, ...]) -> int:
    """The control period: the fastest device's poll period (1 s without devices)."""
    return int(min((d.poll_s for d in devices), default=1.0) * 1000)


__all__ = ["Device", "HomeDevices", "NotAdopted", "control_period_ms", "open_devices"]

