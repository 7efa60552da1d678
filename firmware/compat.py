"""What MicroPython has and CPython lacks, so firmware modules import it from one place.

``const(x)`` lets MicroPython's compiler inline ``_NAME = const(...)`` (no RAM, no lookup); on
CPython it is the identity, so the same source runs in tests and inside sim_devices.
"""

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


__all__ = ["const"]
