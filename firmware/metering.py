"""Tagged energy counters: the meter's import/export Wh with a sequence number and an HMAC.

Settlement pays for metered energy, so a gateway (or a neighbour auditing it) must be able to tell
a reading the meter made from one the homeowner typed in, or one replayed from yesterday. The
meter signs each reading with a key provisioned at flash time (``gridpeer flash`` keeps a copy for
the gateway): ``tag = HMAC-SHA256(key, message(device_id, seq, import_wh, export_wh))``, and
``seq`` grows with every published reading, across reboots. ``protocols/metering.py`` verifies.

The message is fixed here and in protocols/metering.py, byte for byte::

    b"gridpeer/meter/1\\n" + device_id (UTF-8) + b"\\n" + seq (uint32 BE) + import_wh (uint64 BE)
    + export_wh (uint64 BE)

HMAC is written out over ``hashlib.sha256`` because most MicroPython boards ship no ``hmac``
module; the pads are computed once per key so a tag costs two hashes and no allocation beyond
the hash objects. The registers it fills are vendor model 64210 (docs/sunspec-vendor-model.md).
"""

import hashlib
import struct

from firmware.compat import const

_BLOCK = const(64)  # SHA-256 block size
_TAIL = const(20)  # seq, import, export packed after the device id
_DOMAIN = b"gridpeer/meter/1\n"
_SEQ_MAX = const(0xFFFFFFFF)
_WH_MAX = 0xFFFFFFFFFFFFFFFF  # no const(): beyond a small int on 32-bit ports

# Model 64210 layout: offsets from its ID register (see docs/sunspec-vendor-model.md).
MODEL_ID = const(64210)
MODEL_LEN = const(27)  # registers after L: offsets 2..28
OFF_CFG_ERR = const(2)
OFF_SEQ = const(3)
OFF_IMP = const(5)
OFF_EXP = const(9)
OFF_TAG = const(13)
TAG_REGS = const(16)


class MeteringError(ValueError):
    """A counter or key this module cannot tag (our own misuse, never the bus's)."""


def message(device_id, seq, import_wh, export_wh):
    """The bytes a tag covers (allocating; the counter below packs into its own buffer)."""
    head = _DOMAIN + device_id.encode() + b"\n"
    buf = bytearray(len(head) + _TAIL)
    buf[0:len(head)] = head
    struct.pack_into(">IQQ", buf, len(head), seq, import_wh, export_wh)
    return bytes(buf)


def _pads(key):
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    ipad = bytearray(_BLOCK)
    opad = bytearray(_BLOCK)
    for i in range(_BLOCK):
        b = key[i] if i < len(key) else 0
        ipad[i] = b ^ 0x36
        opad[i] = b ^ 0x5C
    return ipad, opad


def _hmac(ipad, opad, msg):
    inner = hashlib.sha256(ipad)
    inner.update(msg)
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


def hmac_sha256(key, msg):
    """RFC 2104 HMAC-SHA256 of ``msg`` under ``key`` (both bytes)."""
    ipad, opad = _pads(key)
    return _hmac(ipad, opad, msg)


class TaggedCounter:
    """Tags one device's readings. ``seq`` is the last sequence number already used (or reserved
    by an earlier boot): the next reading gets ``seq + 1``.

    ``reserve(upto)`` is called before ``seq`` would pass the last reserved value, so the board can
    persist ``upto`` (one flash write per ``block`` readings) and resume above it after a reset: a
    reboot must never reuse a sequence number, or the gateway would see a replay.
    """

    def __init__(self, key, device_id, *, seq=0, reserve=None, block=4096):
        if len(key) < 16:
            raise MeteringError("metering key must be at least 16 bytes")
        if not 0 <= seq < _SEQ_MAX:
            raise MeteringError("sequence number out of range: " + str(seq))
        self._ipad, self._opad = _pads(key)
        head = _DOMAIN + device_id.encode() + b"\n"
        self._head = len(head)
        self._msg = bytearray(self._head + _TAIL)
        self._msg[0:self._head] = head
        self._reserve = reserve
        self._block = block
        self._reserved = seq
        self.seq = seq
        self.import_wh = 0
        self.export_wh = 0
        self.tag = bytes(32)

    def update(self, import_wh, export_wh):
        """Tag a new reading with the next sequence number; returns the tag."""
        if not (0 <= import_wh <= _WH_MAX and 0 <= export_wh <= _WH_MAX):
            raise MeteringError("energy counters must fit uint64")
        seq = self.seq + 1
        if seq > _SEQ_MAX:
            raise MeteringError("sequence number exhausted; reflash with a new key")
        if seq > self._reserved:
            upto = min(_SEQ_MAX, seq + self._block - 1)
            if self._reserve is not None:
                self._reserve(upto)
            self._reserved = upto
        struct.pack_into(">IQQ", self._msg, self._head, seq, import_wh, export_wh)
        self.tag = _hmac(self._ipad, self._opad, self._msg)
        self.seq = seq
        self.import_wh = import_wh
        self.export_wh = export_wh
        return self.tag

    def publish(self, bank, model_addr):
        """Write seq, counters and tag into model 64210 at ``model_addr`` (its ID register)."""
        bank.set32(model_addr + OFF_SEQ, self.seq)
        bank.set64(model_addr + OFF_IMP, self.import_wh)
        bank.set64(model_addr + OFF_EXP, self.export_wh)
        i = 2 * (model_addr + OFF_TAG - bank.base)
        bank.regs[i:i + 32] = self.tag


def blank(bank, model_addr, cfg_err):
    """Fill model 64210's body (after ID and L) for a device that publishes no tagged counters
    (no key, or not a meter): counters "not implemented", tag all zero, the config error bits."""
    bank.set(model_addr + OFF_CFG_ERR, cfg_err)
    bank.set32(model_addr + OFF_SEQ, _SEQ_MAX)
    bank.set64(model_addr + OFF_IMP, 0)
    bank.set64(model_addr + OFF_EXP, 0)
    bank.fill(model_addr + OFF_TAG, TAG_REGS, 0)


def load_seq(path):
    """The last reserved sequence number stored at ``path`` (0 when there is none yet).

    An unreadable file also gives 0 rather than an exception: the gateway then sees "replayed"
    readings until the counter passes its last accepted one, which is loud and safe, while a crash
    here would take the whole meter off the bus.
    """
    try:
        with open(path) as f:
            value = int(f.read().strip())
    except (OSError, ValueError):
        return 0
    return value if 0 <= value < _SEQ_MAX else 0


def save_seq(path, value):
    """Persist a reservation. On littlefs (MicroPython's default filesystem on ESP32) the new
    contents replace the old atomically at close, so a power cut leaves one or the other."""
    with open(path, "w") as f:
        f.write(str(value))
