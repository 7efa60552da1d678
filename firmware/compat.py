"""What MicroPython has and CPython lacks, so firmware modules import it from one place.

``const(x)`` lets MicroPython's compiler inline ``_NAME = const(...)`` (no RAM, no lookup); on
CPython it is the identity, so the same source runs in tests and inside sim_devices. The
``ticks_*`` clocks are MicroPython's wrapping ones (compare them with ``ticks_diff`` only); on
CPython they are the monotonic clock, which never wraps.
"""

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


try:
    from time import ticks_diff, ticks_ms, ticks_us
except ImportError:  # CPython
    from time import monotonic_ns

    def ticks_ms():
        return monotonic_ns() // 1_000_000

    def ticks_us():
        return monotonic_ns() // 1000

    def ticks_diff(new, old):
        return new - old


__all__ = ["const", "ticks_diff", "ticks_ms", "ticks_us"]
