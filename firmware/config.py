"""The device's identity and bus settings: a small JSON file written by ``gridpeer flash``.

    {"device_id": "home7-meter", "role": "meter", "unit": 1, "baud": 9600, "tcp_port": 502,
     "key": "<64 hex digits>"}

A board that raises at boot reboots and raises again: a crash loop that takes it off the bus and
hides why. So loading never raises. Each missing or bad field falls back to a safe default and
sets one bit of ``error``, which the board publishes in vendor model 64210's ``CfgErr`` register,
where the gateway and the installer can read what is wrong over the same Modbus link.

The default role is the meter because it only reads its front end and commands nothing; without
a key the device publishes no tagged counters (a default key would make forgeable tags).
"""

import json

from firmware.compat import const

PATH = "/config.json"
ROLES = ("meter", "pv", "battery", "dcdc", "load")
BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)

# Bits of ``Config.error`` (CfgErr). Documented in docs/sunspec-vendor-model.md.
ERR_MISSING = const(0x0001)  # no config file
ERR_UNREADABLE = const(0x0002)  # not JSON, or not a JSON object
ERR_DEVICE_ID = const(0x0004)
ERR_ROLE = const(0x0008)
ERR_UNIT = const(0x0010)
ERR_BAUD = const(0x0020)
ERR_TCP_PORT = const(0x0040)
ERR_KEY = const(0x0080)
ERR_ROLE_CODE = const(0x0100)  # set by the board: this firmware cannot build the role
ERR_UNKNOWN_KEY = const(0x0200)  # a field this firmware does not know (typo, newer gridpeer)

_ID_MAX = const(32)  # model 1 SN is 16 registers
_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
_KEY_MIN = const(16)
_KEY_MAX = const(64)
_FIELDS = ("device_id", "role", "unit", "baud", "tcp_port", "key")


class Config:
    """Validated settings; ``error`` is 0 or the OR of the ``ERR_*`` bits that applied."""

    def __init__(self):
        self.device_id = "unconfigured"
        self.role = "meter"
        self.unit = 1
        self.baud = 9600
        self.tcp_port = 502
        self.key = None
        self.error = 0


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _device_id(value):
    if not isinstance(value, str) or not 0 < len(value) <= _ID_MAX:
        return None
    for ch in value:
        if ch not in _ID_CHARS:
            return None
    return value


def _key(value):
    if not isinstance(value, str) or len(value) % 2:
        return None
    try:
        key = bytes.fromhex(value)
    except ValueError:
        return None
    return key if _KEY_MIN <= len(key) <= _KEY_MAX else None


def _check(data, cfg, name, ok, err):
    """Take ``data[name]`` if ``ok`` accepts it (returning the value to keep), else flag ``err``."""
    if name not in data:
        cfg.error |= err
        return
    value = ok(data[name])
    if value is None:
        cfg.error |= err
    else:
        setattr(cfg, name, value)


def parse(text):
    """A ``Config`` from the file's text; never raises for any input string or bytes."""
    cfg = Config()
    try:
        data = json.loads(text)
    except (ValueError, TypeError):  # MicroPython raises ValueError for bad JSON too
        data = None
    if not isinstance(data, dict):
        cfg.error = ERR_UNREADABLE
        return cfg
    _check(data, cfg, "device_id", _device_id, ERR_DEVICE_ID)
    _check(data, cfg, "role", lambda v: v if v in ROLES else None, ERR_ROLE)
    _check(data, cfg, "unit", lambda v: v if _is_int(v) and 1 <= v <= 247 else None, ERR_UNIT)
    _check(data, cfg, "baud", lambda v: v if _is_int(v) and v in BAUDS else None, ERR_BAUD)
    _check(data, cfg, "tcp_port", lambda v: v if _is_int(v) and 1 <= v <= 65535 else None,
           ERR_TCP_PORT)
    _check(data, cfg, "key", _key, ERR_KEY)
    for name in data:
        if name not in _FIELDS:
            cfg.error |= ERR_UNKNOWN_KEY
    return cfg


def load(path=PATH):
    """Read and parse the config file; a missing or unreadable file gives defaults + error."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        cfg = Config()
        cfg.error = ERR_MISSING
        return cfg
    except Exception:  # e.g. UnicodeError on a corrupted flash sector
        cfg = Config()
        cfg.error = ERR_UNREADABLE
        return cfg
    return parse(text)

