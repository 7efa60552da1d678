"""Ed25519 signatures over canonical message bodies, and the membership check built on them.

The signed bytes are ``b"gridpeer/1/" + kind + b"\\n" + canonical_bytes(body)``: the kind is part
of what is signed (domain separation), so a signed bid can never be replayed as a commitment or a
certificate, and the version prefix lets a future format coexist without ambiguity.

Everything here is pure: keys go in and out as bytes (raw 32-byte or PEM), never through files.
A peer's message that fails a check is a value, :class:`Rejected`, whose ``reason`` is a short slug
to count and log; exceptions are kept for our own mistakes (signing a model under the wrong kind).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from protocols.canonical import canonical_bytes
from protocols.keycheck import key_problem
from protocols.messages import (
    DEFAULT_MAX_ENVELOPE_BYTES,
    KIND_MODELS,
    Kind,
    MembershipCertificate,
    Message,
    MessageError,
    Revocation,
    SignedEnvelope,
    schema_reason,
)

__all__ = [
    "KeyMaterialError",
    "Rejected",
    "Verified",
    "certificate_standing",
    "check_certificate",
    "generate_key",
    "key_problem",
    "open_envelope",
    "private_key_from_pem",
    "private_key_from_raw",
    "private_key_to_pem",
    "private_key_to_raw",
    "public_key_hex",
    "sign",
    "sign_record",
    "signed_bytes",
    "verify",
    "verify_record",
]

_DOMAIN = b"gridpeer/1/"


class KeyMaterialError(ValueError):
    """Key material we were given cannot be loaded (wrong length, not PEM, not Ed25519)."""


@dataclass(frozen=True, slots=True)
class Verified:
    """A message whose signature checked out: its kind, parsed body and signer's key (hex)."""

    kind: Kind
    body: Message
    public_key_hex: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message we refuse, with a short reason slug for counters and logs, and (``detail``,
    logs only: not part of equality) what the operator needs to see to put it right."""

    reason: str
    detail: str = field(default="", compare=False)


def generate_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key from the operating system's CSPRNG."""
    return Ed25519PrivateKey.generate()


def private_key_to_raw(key: Ed25519PrivateKey) -> bytes:
    """The 32-byte raw seed: the most compact form, e.g. for a key file on the Pi."""
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def private_key_from_raw(data: bytes) -> Ed25519PrivateKey:
    """Load a key from its 32-byte raw seed; :class:`KeyMaterialError` on any other length."""
    if len(data) != 32:
        raise KeyMaterialError(f"raw Ed25519 private key must be 32 bytes, got {len(data)}")
    return Ed25519PrivateKey.from_private_bytes(data)


def private_key_to_pem(key: Ed25519PrivateKey, *, password: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted with ``password`` when given (interoperates with openssl)."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def private_key_from_pem(data: bytes, *, password: bytes | None = None) -> Ed25519PrivateKey:
    """Load a PKCS#8 PEM key; :class:`KeyMaterialError` if it is not an Ed25519 private key."""
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        raise KeyMaterialError(f"cannot load PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyMaterialError(f"PEM key is {type(key).__name__}, not Ed25519")
    return key


def public_key_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """Lowercase hex of the raw 32-byte public key: how keys are named in every message."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


@lru_cache(maxsize=4096)
def _public_key(hex_key: str) -> Ed25519PublicKey:
    """Parsed public keys, cached: a community has a bounded roster and every bid names one."""
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(hex_key))


def signed_bytes(kind: str, body: dict[str, object]) -> bytes:
    """The exact bytes a signature covers (exposed for tests and other implementations)."""
    return _DOMAIN + kind.encode("ascii") + b"\n" + canonical_bytes(body)


def sign(kind: Kind, body: Message, private_key: Ed25519PrivateKey) -> SignedEnvelope:
    """Sign ``body`` as a message of ``kind``.

    Raises ``TypeError`` if ``body`` is not the model for ``kind``: signing a bid as a commitment
    is a programming error on our side, not something to send.
    """
    model = KIND_MODELS[kind]
    if type(body) is not model:
        raise TypeError(f"kind {kind!r} signs {model.__name__}, got {type(body).__name__}")
    data = body.model_dump(mode="json")
    sig = private_key.sign(signed_bytes(kind, data))
    return SignedEnvelope(kind=kind, body=data, signer=public_key_hex(private_key), sig=sig.hex())


def verify(envelope: SignedEnvelope, *, expected_kind: Kind | None = None) -> Verified | Rejected:
    """Check the signer's key, the signature and the body's schema; never raises for a peer's bad
    message.

    Reasons: "wrong-kind", "bad-key:<problem>" (a signer no honest key can be: small order or a
    non-canonical spelling, :func:`key_problem`; with a small-order key one forged signature
    verifies for every message), "bad-signature", "schema:<field>". A key off the curve fails as
    "bad-signature": OpenSSL refuses it there, and checking it here would cost a field
    exponentiation per new key. The signature is checked before the schema so that an unsigned
    peer cannot probe our validator.
    """
    if expected_kind is not None and envelope.kind != expected_kind:
        return Rejected("wrong-kind")
    weak = key_problem(envelope.signer, curve=False)
    if weak is not None:
        return Rejected(f"bad-key:{weak}")
    public = _public_key(envelope.signer)
    body_bytes = canonical_bytes(envelope.body)
    message = _DOMAIN + envelope.kind.encode("ascii") + b"\n" + body_bytes
    try:
        public.verify(bytes.fromhex(envelope.sig), message)
    except InvalidSignature:
        return Rejected("bad-signature")
    try:
        body = KIND_MODELS[envelope.kind].model_validate_json(body_bytes)
    except ValidationError as exc:
        return Rejected(schema_reason(exc))
    return Verified(kind=envelope.kind, body=body, public_key_hex=envelope.signer)


def sign_record(kind: str, body: dict[str, object], private_key: Ed25519PrivateKey) -> str:
    """Sign a record that is not a wire message (a ledger's header, a block's hash): hex signature.

    ``kind`` is signed with the body as for messages, and may not be a message kind, so no
    record's signature can pass for a message's or the other way round.
    """
    if kind in KIND_MODELS:
        raise ValueError(f"{kind!r} is a message kind; records sign under their own")
    return private_key.sign(signed_bytes(kind, body)).hex()


def verify_record(kind: str, body: dict[str, object], *, signer: str, sig: str) -> str | None:
    """Why a record's signature does not hold (``"bad-key:<problem>"``, ``"bad-signature"``), or
    None when ``signer`` signed ``body`` under ``kind``."""
    weak = key_problem(signer)
    if weak is not None:
        return f"bad-key:{weak}"
    if len(sig) != 128 or sig.strip("0123456789abcdef"):
        return "bad-signature"  # one spelling per signature: lowercase hex, as signed
    try:
        _public_key(signer).verify(bytes.fromhex(sig), signed_bytes(kind, body))
    except (InvalidSignature, ValueError):
        return "bad-signature"
    return None


def open_envelope(
    data: bytes,
    *,
    expected_kind: Kind | None = None,
    max_size: int = DEFAULT_MAX_ENVELOPE_BYTES,
) -> Verified | Rejected:
    """Parse and verify a wire payload in one step: what a peer-link adapter calls per message."""
    try:
        envelope = SignedEnvelope.from_bytes(data, max_size=max_size)
    except MessageError as exc:
        return Rejected(exc.reason)
    return verify(envelope, expected_kind=expected_kind)


def check_certificate(
    envelope: SignedEnvelope,
    authority_public_key_hex: str,
    *,
    community: str,
    now_ms: int,
    revocations: Iterable[Revocation] = (),
) -> Verified | Rejected:
    """Verify a membership certificate against the community authority at time ``now_ms``.

    Reasons beyond :func:`verify`'s: "not-authority" (signed by another key), "bad-key:<problem>"
    (the certified key is no acceptable Ed25519 key, :func:`key_problem`), "wrong-community",
    "not-yet-valid", "expired", "revoked". ``revocations`` are already-verified
    :class:`Revocation` bodies (verify them with ``expected_kind="revoke"`` and this same
    authority check); one matching this node and key, effective at ``now_ms``, revokes it.
    """
    if envelope.signer != authority_public_key_hex:
        return Rejected("not-authority")
    checked = verify(envelope, expected_kind="cert")
    if isinstance(checked, Rejected):
        return checked
    cert = checked.body
    assert isinstance(cert, MembershipCertificate)  # guaranteed by expected_kind="cert"
    weak = key_problem(cert.public_key)
    if weak is not None:
        return Rejected(f"bad-key:{weak}")
    refused = certificate_standing(cert, community=community, now_ms=now_ms,
                                   revocations=revocations)
    return checked if refused is None else refused


def certificate_standing(
    cert: MembershipCertificate,
    *,
    community: str,
    now_ms: int,
    revocations: Iterable[Revocation] = (),
) -> Rejected | None:
    """Whether a certificate whose signature :func:`check_certificate` verified still admits its
    node at ``now_ms`` (None) or why not. Split out so a roster verifies each certificate's
    signature once, when it arrives, and only this at every message."""
    if cert.community != community:
        return Rejected("wrong-community")
    if now_ms < cert.valid_from_ms:
        return Rejected("not-yet-valid")
    if now_ms >= cert.valid_until_ms:
        return Rejected("expired")
    for revocation in revocations:
        if (
            revocation.community == community
            and revocation.node == cert.node
            and revocation.public_key == cert.public_key
            and revocation.revoked_at_ms <= now_ms
        ):
            return Rejected("revoked")
    return None
