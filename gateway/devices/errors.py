"""The device layer's exceptions: one base class, each subclass says what went wrong and where.

Callers (pollers, the dispatcher) catch ``DeviceError`` to count a failure and carry on; the
subclasses exist so a log line or a health counter can tell a dead link from a device that answered
but refused, and both from a device whose map is not what we can drive. No pymodbus exception ever
leaves this package: the bus translates them all into these.
"""

from __future__ import annotations


class DeviceError(Exception):
    """Base class of every error raised by ``gateway.devices``."""


class DeviceTimeout(DeviceError):
    """The device did not answer within the bus timeout, after all retries."""


class DeviceUnreachable(DeviceError):
    """The transport could not be opened (connection refused, no such serial port, ...)."""


class ModbusException(DeviceError):
    """The device answered with a Modbus exception response.

    ``code`` is the Modbus exception code (1 illegal function, 2 illegal data address, 3 illegal
    data value, 4 device failure, 6 busy, ...); ``function`` the function code of the request.
    """

    def __init__(self, *, code: int, function: int, address: int, unit: int) -> None:
        self.code = code
        self.function = function
        self.address = address
        self.unit = unit
        super().__init__(
            f"unit {unit} answered function {function} at register {address} "
            f"with Modbus exception {code} ({_EXCEPTION_NAMES.get(code, 'unknown')})"
        )


class NotSunSpec(DeviceError):
    """No ``"SunS"`` marker at any of the base addresses SunSpec allows."""


class MissingModel(DeviceError):
    """The device's model chain lacks a model a driver needs."""

    def __init__(self, *, driver: str, missing: tuple[int, ...], present: tuple[int, ...],
                 one_of: bool = False) -> None:
        self.driver = driver
        self.missing = missing
        self.present = present
        needs = "one of SunSpec models" if one_of else "SunSpec model(s)"
        super().__init__(
            f"{driver} needs {needs} {list(missing)} but the device only has {list(present)}"
        )


class NotCommandable(DeviceError):
    """The device's map does not carry the command asked for: the control model is absent, or a
    point of it (its revert timer, its scale factor) is "not implemented". The reason names which.

    Nothing is written: a setpoint the device cannot scale, or one it would hold forever without a
    revert timer, is refused rather than guessed.
    """


class BadDeviceData(DeviceError):
    """The device answered, but what it said is not a valid SunSpec map or value.

    Examples: a model chain that runs past the address space, a model shorter than its fixed
    points, a scale factor outside -10..10, a mandatory point left "not implemented".
    """


_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
