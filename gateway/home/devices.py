"""The home's devices: one record per configured device, built through the driver registry.

The node iterates these records (to poll them, to report their health, to see which an offer
counts on) and never names a device in an attribute of its own. The controllers take the devices
of the kinds they drive from :class:`HomeDevices`, typed by driver: a battery controller gets the
battery's driver and poller, the loads controller every load's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gateway.clock import Clock
from gateway.config import DeviceConfig
from gateway.devices import (
    Battery,
    BatteryReading,
    ControllableLoad,
    DcDcConverter,
    DcDcReading,
    DevicePoller,
    DiscoveredDevice,
    LoadReading,
    Meter,
    MeterReading,
    PvInverter,
    PvReading,
    discover,
)
from gateway.devices.registry import DRIVERS, open_bus

D = TypeVar("D")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Device(Generic[D, R]):
    """One configured device: its config entry, what discovery found, its driver, and the poller
    that keeps its latest reading."""

    config: DeviceConfig
    found: DiscoveredDevice
    driver: D
    poller: DevicePoller[R]

    @property
    def name(self) -> str:
        return self.config.name

    def fresh(self) -> R | None:
        """The latest reading, None when it must not be acted on (stale)."""
        return None if self.poller.stale else self.poller.latest


class HomeDevices:
    """Every configured device in the config's order, by name, and by the driver that runs it.

    The controllers drive one meter, battery, PV inverter and converter, each the last of its
    kind in the config (the config allows one meter and one converter), and every load.
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
        return tuple(d for d in self._devices if isinstance(d.driver, driver))

    def _driven(self, driver: type[D]) -> Device[D, Any] | None:
        return next(reversed(self._all(driver)), None)


async def open_devices(devices: tuple[DeviceConfig, ...], *, clock: Clock,
                       stack: contextlib.AsyncExitStack) -> HomeDevices:
    """Open each device's bus on ``stack``, discover its SunSpec map and build its driver and
    poller, in the config's order.

    The drivers' plausibility checks bound how fast a counter may rise with ``clock``: the
    devices' physics runs on it (simulated time in a simulated world).
    """
    def now_s() -> float:
        return clock.now_ms() / 1000

    records: list[Device[Any, Any]] = []
    for config in devices:
        bus = await stack.enter_async_context(open_bus(config.url, timeout_s=config.timeout_s))
        found = await discover(bus, unit=config.unit)
        driver = DRIVERS[config.kind](bus=bus, device=found, now_s=now_s)
        poller = DevicePoller(name=config.name, driver=driver,
                              period_s=clock.real_seconds(config.poll_s * 1000),
                              stale_after=config.stale_after)
        records.append(Device(config=config, found=found, driver=driver, poller=poller))
    return HomeDevices(tuple(records))


def control_period_ms(devices: tuple[DeviceConfig, ...]) -> int:
    """The control period: the fastest device's poll period (1 s without devices)."""
    return int(min((d.poll_s for d in devices), default=1.0) * 1000)


__all__ = ["Device", "HomeDevices", "control_period_ms", "open_devices"]

