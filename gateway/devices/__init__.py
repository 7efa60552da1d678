"""The gateway's device layer: Modbus buses, SunSpec discovery, one driver per device kind.

Usage::

    async with ModbusTcpBus(host="192.0.2.10", port=502, timeout_s=1.0) as bus:
        device = await discover(bus, unit=1)
        battery = Battery(bus=bus, device=device)
        reading = await battery.read()
        await battery.set_power(watts=-1500, revert_s=60)

Every failure is a ``DeviceError`` subclass; nothing from pymodbus escapes. A reading no healthy
device can give (Modbus TCP has no checksum) is one too: ``ImplausibleReading``, from the checks
each driver runs on the points it reads (``gateway/devices/plausibility.py``); give the drivers
``now_s``, the clock the device's physics runs on, to bound how fast its counters may move. A
command the device's map cannot carry is ``NotCommandable``, and each driver says what it commands
through which points (``commands``). Which SunSpec models each driver accepts: docs/devices.md.
"""

from gateway.devices.battery import Battery, BatteryReading
from gateway.devices.bus import BusStats, ModbusBus, ModbusSerialBus, ModbusTcpBus
from gateway.devices.capability import Command
from gateway.devices.dcdc import ConverterState, DcDcConverter, DcDcReading
from gateway.devices.discovery import CommonInfo, DiscoveredDevice, discover
from gateway.devices.errors import (
    BadDeviceData,
    DeviceError,
    DeviceTimeout,
    DeviceUnreachable,
    MissingModel,
    ModbusException,
    NotCommandable,
    NotSunSpec,
)
from gateway.devices.load import ControllableLoad, LoadKind, LoadReading, PackReading
from gateway.devices.meter import Meter, MeterReading
from gateway.devices.model_reader import ModelData, ModelLocation, read_models
from gateway.devices.plausibility import ImplausibleReading
from gateway.devices.poller import DevicePoller, PollerHealth, Readable
from gateway.devices.pv import PvInverter, PvReading

__all__ = [
    "BadDeviceData", "Battery", "BatteryReading", "BusStats", "Command", "CommonInfo",
    "ControllableLoad",
    "ConverterState", "DcDcConverter", "DcDcReading", "DeviceError", "DevicePoller",
    "DeviceTimeout", "DeviceUnreachable", "DiscoveredDevice", "ImplausibleReading", "LoadKind",
    "LoadReading", "Meter", "MeterReading", "MissingModel", "PackReading",
    "ModbusBus", "ModbusException", "ModbusSerialBus", "ModbusTcpBus", "ModelData",
    "ModelLocation", "NotCommandable", "NotSunSpec", "PollerHealth", "PvInverter", "PvReading",
    "Readable", "discover", "read_models",
]
