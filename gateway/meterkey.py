"""The gateway's copy of its meter's HMAC key: the file ``gridpeer flash`` writes (hex, mode 600).

The key lets whoever holds it forge the meter's readings, so it is refused when others can read
the file, exactly like the node key; and a key of the wrong size is refused at start-up instead
of showing up later as every reading "bad-tag".
"""

from __future__ import annotations

import stat
from pathlib import Path

from gateway.identity import IdentityError

MIN_KEY_BYTES = 16
"""The shortest key the firmware's ``TaggedCounter`` accepts."""
MAX_KEY_BYTES = 64


def load_meter_key(path: Path) -> bytes:
    """The key in ``path``; :class:`IdentityError` says which file and what is wrong with it."""
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except FileNotFoundError:
        raise IdentityError(
            f"{path}: no meter key file (`gridpeer flash` saves one per meter)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IdentityError(f"{path}: meter key file cannot be read ({exc})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"{path}: meter key file is readable by others (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise IdentityError(f"{path}: a meter key file holds the key as hex") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise IdentityError(f"{path}: meter key must be {MIN_KEY_BYTES}..{MAX_KEY_BYTES} bytes, "
                            f"got {len(key)}")
    return key
