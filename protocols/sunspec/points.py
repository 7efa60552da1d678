"""Encode and decode SunSpec point values to and from 16-bit registers.

SunSpec marks a point a device does not implement with a per-type sentinel (0x8000 for int16,
0xFFFF for uint16/enum16, 0 for accumulators, NaN for floats, a leading NUL for strings). Callers
must not mistake those for readings (0x8000 read as -32768 W would be a disaster for a dispatcher),
so ``decode`` returns None for them and ``encode(point, None)`` writes them. Registers are
big-endian and multi-register values are high word first, as the SunSpec spec says.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from fractions import Fraction

from protocols.sunspec.models import PointDef

Value = int | float | str | None

# struct format (big-endian) and not-implemented raw value per numeric type.
_INT_TYPES: dict[str, tuple[str, int]] = {
    "int16": (">h", -0x8000), "sunssf": (">h", -0x8000),
    "uint16": (">H", 0xFFFF), "count": (">H", 0xFFFF), "enum16": (">H", 0xFFFF),
    "bitfield16": (">H", 0xFFFF), "acc16": (">H", 0),
    "int32": (">i", -0x8000_0000),
    "uint32": (">I", 0xFFFF_FFFF), "enum32": (">I", 0xFFFF_FFFF),
    "bitfield32": (">I", 0xFFFF_FFFF), "acc32": (">I", 0), "ipaddr": (">I", 0),
    "int64": (">q", -0x8000_0000_0000_0000),
    "uint64": (">Q", 0xFFFF_FFFF_FFFF_FFFF), "acc64": (">Q", 0),
}
_FLOAT_TYPES = {"float32": ">f", "float64": ">d"}
_FLOAT_NAN = {"float32": b"\x7f\xc0\x00\x00", "float64": b"\x7f\xf8" + bytes(6)}

#: SunSpec allows scale factors -10..10; anything else is a corrupt register, not a reading.
SF_RANGE = range(-10, 11)


class PointValueError(ValueError):
    """A value does not fit the point's type, or registers have the wrong count or range."""


def _regs_to_bytes(point: PointDef, regs: Sequence[int]) -> bytes:
    if len(regs) != point.size:
        raise PointValueError(f"{point.name}: {point.type} needs {point.size} registers, "
                              f"got {len(regs)}")
    try:
        return struct.pack(f">{point.size}H", *regs)
    except struct.error:
        raise PointValueError(f"{point.name}: registers must be 0..65535: {list(regs)}") from None


def _bytes_to_regs(data: bytes) -> tuple[int, ...]:
    return struct.unpack(f">{len(data) // 2}H", data)


def decode(point: PointDef, regs: Sequence[int]) -> Value:
    """The value of ``point`` held in ``regs`` (raw, unscaled), or None if not implemented."""
    data = _regs_to_bytes(point, regs)
    t = point.type
    if t in _INT_TYPES:
        fmt, unimpl = _INT_TYPES[t]
        (value,) = struct.unpack(fmt, data)
        return None if value == unimpl else int(value)
    if t in _FLOAT_TYPES:
        (f,) = struct.unpack(_FLOAT_TYPES[t], data)
        return None if math.isnan(f) else float(f)
    if t == "string":
        if not data or data[0] == 0:
            return None
        try:
            return data.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            raise PointValueError(f"{point.name}: string registers are not UTF-8") from None
    if t == "pad":
        return None
    if t == "eui48":
        return None if data[2:] == b"\xff" * 6 else ":".join(f"{b:02X}" for b in data[2:])
    if t == "ipv6addr":
        return None if not any(data) else ":".join(data[i:i + 2].hex().upper() for i in
                                                    range(0, 16, 2))
    raise PointValueError(f"{point.name}: unknown point type {t!r}")


def encode(point: PointDef, value: Value) -> tuple[int, ...]:
    """The registers that hold raw ``value`` for ``point``; None gives the not-implemented value.

    Values that a reader would decode as "not implemented" (e.g. -32768 for int16, 0 for an
    accumulator) are rejected for the same reason ``decode`` hides them.
    """
    t = point.type
    if t in _INT_TYPES:
        fmt, unimpl = _INT_TYPES[t]
        if value is None:
            value = unimpl
        elif isinstance(value, bool) or not isinstance(value, int):
            raise PointValueError(f"{point.name}: {t} needs an int, got {value!r}")
        elif value == unimpl:
            raise PointValueError(f"{point.name}: {value} is {t}'s not-implemented value")
        if t == "sunssf" and value != unimpl and value not in SF_RANGE:
            raise PointValueError(f"{point.name}: scale factor {value} outside -10..10")
        try:
            return _bytes_to_regs(struct.pack(fmt, value))
        except struct.error:
            raise PointValueError(f"{point.name}: {value} out of range for {t}") from None
    if t in _FLOAT_TYPES:
        if value is None:
            return _bytes_to_regs(_FLOAT_NAN[t])
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise PointValueError(f"{point.name}: {t} needs a number, got {value!r}")
        try:
            return _bytes_to_regs(struct.pack(_FLOAT_TYPES[t], value))
        except (struct.error, OverflowError):
            raise PointValueError(f"{point.name}: {value} out of range for {t}") from None
    if t == "string":
        return _encode_string(point, value)
    if t == "pad":
        if value not in (None, 0):
            raise PointValueError(f"{point.name}: pad holds no value, got {value!r}")
        return (0,)
    if t == "eui48":
        return _encode_hex(point, value, 6, b"\xff" * 6, b"\0\0")
    if t == "ipv6addr":
        return _encode_hex(point, value, 16, bytes(16), b"")
    raise PointValueError(f"{point.name}: unknown point type {t!r}")


def _encode_string(point: PointDef, value: Value) -> tuple[int, ...]:
    if value is None:
        return (0,) * point.size
    if not isinstance(value, str):
        raise PointValueError(f"{point.name}: string needs a str, got {value!r}")
    data = value.encode("utf-8")
    if not data or data[0] == 0 or data.endswith(b"\0"):
        raise PointValueError(f"{point.name}: {value!r} would read back as a different string")
    if len(data) > 2 * point.size:
        raise PointValueError(f"{point.name}: {value!r} longer than {2 * point.size} bytes")
    return _bytes_to_regs(data.ljust(2 * point.size, b"\0"))


def _encode_hex(
    point: PointDef, value: Value, n: int, unimpl: bytes, lead: bytes
) -> tuple[int, ...]:
    if value is None:
        return _bytes_to_regs(lead + unimpl)
    try:
        if not isinstance(value, str):
            raise ValueError
        data = bytes.fromhex(value.replace(":", ""))
    except ValueError:
        raise PointValueError(f"{point.name}: {point.type} needs hex text, got {value!r}") from None
    if len(data) != n or data == unimpl:
        raise PointValueError(f"{point.name}: {value!r} is not a valid {point.type}")
    return _bytes_to_regs(lead + data)


def apply_sf(raw: int, sf: int) -> int | float:
    """``raw`` × 10**``sf``: an int when the result is whole (sf >= 0), else a float."""
    if sf not in SF_RANGE:
        raise PointValueError(f"scale factor {sf} outside -10..10")
    scale = int(10 ** abs(sf))
    return raw * scale if sf >= 0 else raw / scale


def to_raw(value: int | float, sf: int) -> int:
    """The register integer that represents ``value`` under scale factor ``sf``.

    Exact arithmetic (Fraction) so 0.3 V at sf -1 is 3, not 2 from binary float error; ties round
    to even like ``round``.
    """
    if sf not in SF_RANGE:
        raise PointValueError(f"scale factor {sf} outside -10..10")
    return round(Fraction(value) * Fraction(10) ** -sf)
