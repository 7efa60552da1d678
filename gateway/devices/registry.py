"""Which driver drives each kind of configured device (``DRIVERS[kind]``), and the bus a device's
URL names.

Every driver is built the same way, from its bus, what discovery found at its unit and the clock
its device's physics runs on, so the gateway assembles a home by looking its devices' kinds up
here instead of branching on them. A new kind of device is one driver and one line below (and
its kind in ``DeviceConfig``, which validates it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from gateway.devices.battery import Battery
from gateway.devices.bus import ModbusBus, ModbusSerialBus, ModbusTcpBus
from gateway.devices.capability import Driver
from gateway.devices.dcdc import DcDcConverter
from gateway.devices.discovery import DiscoveredDevice
from gateway.devices.load import ControllableLoad
from gateway.devices.meter import Meter
from gateway.devices.pv import PvInverter


class DriverFactory(Protocol):
    """A driver class: built from its bus, the discovered device and the device's clock."""

    def __call__(self, *, bus: ModbusBus, device: DiscoveredDevice,
                 now_s: Callable[[], float] | None = None) -> Driver[Any]: ...


DRIVERS: Mapping[str, DriverFactory] = {
    "meter": Meter,
    "pv": PvInverter,
    "battery": Battery,
    "dcdc": DcDcConverter,
    "load": ControllableLoad,
}
"""The driver of each device kind a gateway config may name."""


def open_bus(url: str, *, timeout_s: float, first_timeout_s: float | None = None) -> ModbusBus:
    """The bus ``url`` names: ``tcp://host:port`` or ``rtu:///dev/tty?baud=9600`` (the config
    validated its shape). ``first_timeout_s``: the wait for a new link's first answer."""
    parts = urlsplit(url)
    if parts.scheme == "tcp":
        assert parts.hostname is not None and parts.port is not None
        return ModbusTcpBus(host=parts.hostname, port=parts.port, timeout_s=timeout_s,
                            first_timeout_s=first_timeout_s)
    baud = int(parse_qs(parts.query).get("baud", ["9600"])[0])
    return ModbusSerialBus(port=parts.path, baudrate=baud, timeout_s=timeout_s,
                           first_timeout_s=first_timeout_s)


__all__ = ["DRIVERS", "DriverFactory", "open_bus"]
