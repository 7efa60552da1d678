"""Key and certificate files on disk: the only place the gateway touches its secret key.

The node key is made on the Pi and never leaves it; the file is created owner-read-only in one
step (no window in which another user could read it) and refused at load time if anyone else can
read it, as ssh does with its keys.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.messages import MembershipCertificate, MessageError, SignedEnvelope
from protocols.signing import (
    KeyMaterialError,
    Rejected,
    generate_key,
    key_problem,
    private_key_from_pem,
    private_key_to_pem,
    verify,
)


class IdentityError(Exception):
    """A key or certificate file that cannot be used; the message says which file and why."""


def create_key_file(path: Path) -> Ed25519PrivateKey:
    """Make a fresh key and write it as PKCS#8 PEM readable only by its owner; never overwrites."""
    key = generate_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise IdentityError(f"{path}: already exists; not overwriting a key") from None
    with os.fdopen(fd, "wb") as f:
        f.write(private_key_to_pem(key))
    return key


def load_key_file(path: Path) -> Ed25519PrivateKey:
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise IdentityError(f"{path}: no key file (make one with `gridpeer init`)") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"{path}: key file is readable by others (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`"
        )
    try:
        return private_key_from_pem(data)
    except KeyMaterialError as exc:
        raise IdentityError(f"{path}: {exc}") from None


def save_envelope(path: Path, envelope: SignedEnvelope) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(envelope.to_bytes())
    os.replace(tmp, path)


def load_certificate(path: Path) -> tuple[SignedEnvelope, MembershipCertificate]:
    """Read a certificate file and check its signature (not its authority: the roster does that)."""
    try:
        envelope = SignedEnvelope.from_bytes(path.read_bytes())
    except FileNotFoundError:
        raise IdentityError(
            f"{path}: no certificate (ask the community installer for one: "
            "`gridpeer community admit`)"
        ) from None
    except MessageError as exc:
        raise IdentityError(f"{path}: not a certificate ({exc})") from None
    checked = verify(envelope, expected_kind="cert")
    if isinstance(checked, Rejected):
        raise IdentityError(f"{path}: certificate rejected: {checked.reason}")
    cert = checked.body
    assert isinstance(cert, MembershipCertificate)
    weak = key_problem(cert.public_key)
    if weak is not None:
        raise IdentityError(f"{path}: certificate rejected: its public key is {weak} "
                            "(no node key can be; ask the installer for a new one)")
    return envelope, cert
