"""Verify a meter's tagged energy reading (firmware/metering.py makes them).

A reading is ``(device_id, seq, import_wh, export_wh)`` with an HMAC-SHA256 tag under the key the
installer provisioned at flash time. It is accepted only if the tag matches (nobody without the
key altered it) and ``seq`` is above the last one accepted from that meter (nobody replayed an
older, genuine reading). Pure: the caller keeps ``last_seq`` per meter.

The message layout is the firmware's, byte for byte (both are pinned by a golden-vector test)::

    b"gridpeer/meter/1\\n" + device_id (UTF-8) + b"\\n" + seq (uint32 BE) + import_wh (uint64 BE)
    + export_wh (uint64 BE)
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

DOMAIN = b"gridpeer/meter/1\n"
_SEQ_MAX = 0xFFFFFFFF
_WH_MAX = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True, slots=True)
class VerifiedReading:
    """A reading whose tag checked out and whose sequence number is new."""

    device_id: str
    seq: int
    import_wh: int
    export_wh: int


@dataclass(frozen=True, slots=True)
class RejectedReading:
    """A refused reading: "malformed" (not something a meter can tag), "bad-tag" (altered, or
    another key), "replayed" (genuine but not newer than the last accepted)."""

    reason: str


def reading_message(device_id: str, seq: int, import_wh: int, export_wh: int) -> bytes:
    """The bytes the meter's tag covers."""
    return (DOMAIN + device_id.encode() + b"\n"
            + struct.pack(">IQQ", seq, import_wh, export_wh))


def reading_tag(key: bytes, device_id: str, seq: int, import_wh: int, export_wh: int) -> bytes:
    """The tag a meter holding ``key`` publishes for this reading (for tests and simulators)."""
    return hmac.digest(key, reading_message(device_id, seq, import_wh, export_wh), "sha256")


def verify_reading(key: bytes, device_id: str, seq: int, import_wh: int, export_wh: int,
                   tag_hex: str, last_seq: int | None) -> VerifiedReading | RejectedReading:
    """Accept the reading or say why not; ``last_seq`` None = nothing accepted from it yet."""
    if not (0 <= seq <= _SEQ_MAX and 0 <= import_wh <= _WH_MAX and 0 <= export_wh <= _WH_MAX):
        return RejectedReading("malformed")
    try:
        tag = bytes.fromhex(tag_hex)
    except ValueError:
        return RejectedReading("malformed")
    if len(tag) != 32:
        return RejectedReading("malformed")
    expected = reading_tag(key, device_id, seq, import_wh, export_wh)
    if not hmac.compare_digest(tag, expected):
        return RejectedReading("bad-tag")
    if last_seq is not None and seq <= last_seq:
        return RejectedReading("replayed")
    return VerifiedReading(device_id, seq, import_wh, export_wh)
