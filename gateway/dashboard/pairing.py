"""The owner's dashboard credential: a pairing token printed once on the Pi, and login sessions.

Changing anything through the dashboard needs a session, and a session comes only from typing the
token that ``gridpeer dashboard pair`` printed on the gateway: whoever can run that command owns
the gateway anyway, and nobody else on the network learns the token. The token is 128 random bits
(no password rules, no guessing), so it is kept as a plain SHA-256 hash (a slow KDF protects
guessable passwords; a random token has nothing to guess) and compared in constant time.

A session is a cookie ``EXPIRY.MAC``: an HMAC of its expiry under a session key that lives next to
the token's hash. It needs no server-side table, so it survives a gateway restart; pairing again
replaces the key, which ends every session at once (the owner's answer to a lost phone).

The file ``STATE_DIR/dashboard-owner.json`` is written only by the CLI, atomically and owner-only,
and read at every login and every change, so a new pairing takes effect without a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CREDENTIAL_FILE = "dashboard-owner.json"
"""In the gateway's ``state_dir``."""
TOKEN_BYTES = 16
SESSION_COOKIE = "gridpeer_session"
SESSION_S = 30 * 86_400
"""How long a login lasts: the owner logs in again on each device once a month."""
_TYPOS = str.maketrans({"0": "O", "1": "I", "8": "B", "-": None, " ": None})


def format_token(raw: bytes) -> str:
    """Base32 in groups of four (``ABCD-EFGH-...``): easy to read out and type, no 0/O or 1/I."""
    text = base64.b32encode(raw).decode().rstrip("=")
    return "-".join(text[i:i + 4] for i in range(0, len(text), 4))


def parse_token(typed: str) -> bytes | None:
    """The token's bytes from what the owner typed (any case, dashes and spaces ignored, the
    digits 0, 1 and 8 read as the letters O, I and B); None if it cannot be one."""
    text = typed.upper().translate(_TYPOS)
    if len(text) != 26 or not text.isascii():
        return None
    try:
        raw = base64.b32decode(text + "======")
    except ValueError:
        return None
    # the last letter carries 3 bits: only the spelling format_token gives is the token
    return raw if len(raw) == TOKEN_BYTES and format_token(raw).replace("-", "") == text else None


def cookie_value(header: str | None, name: str = SESSION_COOKIE) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` request header; None if absent."""
    for part in (header or "").split(";"):
        key, eq, value = part.strip().partition("=")
        if eq and key == name:
            return value.strip()
    return None


@dataclass(frozen=True, slots=True)
class OwnerCredential:
    """The token's hash and the key that signs sessions."""

    token_sha256: bytes
    session_key: bytes

    @classmethod
    def new(cls) -> tuple[OwnerCredential, str]:
        """A fresh credential and its token as the owner types it (shown once, never stored)."""
        raw = secrets.token_bytes(TOKEN_BYTES)
        return cls(hashlib.sha256(raw).digest(), secrets.token_bytes(32)), format_token(raw)

    def token_matches(self, typed: str) -> bool:
        raw = parse_token(typed)
        return raw is not None and hmac.compare_digest(hashlib.sha256(raw).digest(),
                                                       self.token_sha256)

    def _mac(self, expiry_s: int) -> str:
        return hmac.new(self.session_key, f"session:{expiry_s}".encode(), "sha256").hexdigest()

    def new_session(self, *, now_s: float) -> str:
        """A session cookie value valid for ``SESSION_S`` from ``now_s``."""
        expiry = int(now_s) + SESSION_S
        return f"{expiry}.{self._mac(expiry)}"

    def session_valid(self, value: str, *, now_s: float) -> bool:
        expiry_text, _, mac = value.partition(".")
        if not (expiry_text.isascii() and expiry_text.isdigit() and len(expiry_text) <= 12):
            return False
        expiry = int(expiry_text)
        fresh = now_s < expiry <= now_s + SESSION_S
        return hmac.compare_digest(mac.encode(), self._mac(expiry).encode()) and fresh

    def to_json(self) -> str:
        return json.dumps({"token_sha256": self.token_sha256.hex(),
                           "session_key": self.session_key.hex()})

    @classmethod
    def from_json(cls, text: str) -> OwnerCredential:
        """Raises ValueError when ``text`` is not a credential."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        token, key = bytes.fromhex(data["token_sha256"]), bytes.fromhex(data["session_key"])
        if len(token) != 32 or len(key) != 32:
            raise ValueError("token_sha256 and session_key must be 32 bytes each")
        return cls(token, key)


class CredentialFile:
    """``STATE_DIR/dashboard-owner.json``: written by ``gridpeer dashboard pair`` only."""

    def __init__(self, *, path: Path) -> None:
        self.path = path

    def load(self) -> OwnerCredential | None:
        """The credential; None when the owner has not paired yet or the file is unusable (which
        is logged: the owner then pairs again)."""
        try:
            return OwnerCredential.from_json(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: unusable dashboard credential (%s): run `gridpeer dashboard pair`",
                        self.path, exc)
            return None

    def save(self, credential: OwnerCredential) -> None:
        """Atomically, mode 600; run as root (sudo), the file goes to the state folder's owner,
        the service user, so the gateway can read it."""
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an older .tmp may have kept wider permissions
            if os.geteuid() == 0:
                owner = folder.stat()
                os.fchown(fd, owner.st_uid, owner.st_gid)
            os.write(fd, credential.to_json().encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
