"""Ed25519 over canonical bodies: golden vector, tampering, domain separation, certificates."""

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.messages import (
    Bid,
    BidSet,
    Commitment,
    MembershipCertificate,
    Revocation,
    SignedEnvelope,
)
from protocols.signing import (
    KeyMaterialError,
    Rejected,
    Verified,
    check_certificate,
    generate_key,
    open_envelope,
    private_key_from_pem,
    private_key_from_raw,
    private_key_to_pem,
    private_key_to_raw,
    public_key_hex,
    sign,
    signed_bytes,
    verify,
)

# RFC 8032, section 7.1, test 1.
RFC_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"

BID = Bid(
    community="elm-street", interval=12, node="house-7", seq=3, side="buy", energy_wh=500,
    limit_price=280, created_ms=1_700_000_000_000,
)
NODE_KEY = generate_key()
AUTHORITY = generate_key()


def test_golden_signature_over_domain_separated_canonical_bytes() -> None:
    key = private_key_from_raw(RFC_SECRET)
    assert public_key_hex(key) == RFC_PUBLIC
    envelope = sign("bid", BID, key)
    expected = (
        b"gridpeer/1/bid\n"
        b'{"community":"elm-street","created_ms":1700000000000,"energy_wh":500,"interval":12,'
        b'"limit_price":280,"node":"house-7","seq":3,"side":"buy"}'
    )
    independent = Ed25519PrivateKey.from_private_bytes(RFC_SECRET).sign(expected)
    assert envelope.sig == independent.hex()
    assert envelope.signer == RFC_PUBLIC


def test_sign_verify_round_trip_through_the_wire() -> None:
    data = sign("bid", BID, NODE_KEY).to_bytes()
    result = open_envelope(data, expected_kind="bid")
    assert result == Verified(kind="bid", body=BID, public_key_hex=public_key_hex(NODE_KEY))


@settings(max_examples=60)
@given(
    st.sampled_from(["interval", "seq", "energy_wh", "limit_price", "created_ms"]),
    st.integers(min_value=1, max_value=1000),
)
def test_any_tampered_field_breaks_the_signature(field: str, delta: int) -> None:
    envelope = sign("bid", BID, NODE_KEY)
    body = dict(envelope.body)
    body[field] += delta
    tampered = envelope.model_copy(update={"body": body})
    assert verify(tampered) == Rejected("bad-signature")


def test_signature_from_another_key_is_rejected() -> None:
    envelope = sign("bid", BID, NODE_KEY)
    impostor = envelope.model_copy(update={"signer": public_key_hex(generate_key())})
    assert verify(impostor) == Rejected("bad-signature")


def test_a_bid_cannot_be_replayed_as_another_kind() -> None:
    envelope = sign("bid", BID, NODE_KEY)
    relabelled = envelope.model_copy(update={"kind": "commit"})
    assert verify(relabelled) == Rejected("bad-signature")
    assert verify(envelope, expected_kind="commit") == Rejected("wrong-kind")


def test_validly_signed_but_invalid_body_is_a_schema_reason() -> None:
    body: dict[str, Any] = BID.model_dump(mode="json") | {"energy_wh": -1}
    sig = NODE_KEY.sign(signed_bytes("bid", body)).hex()
    envelope = SignedEnvelope(kind="bid", body=body, signer=public_key_hex(NODE_KEY), sig=sig)
    assert verify(envelope) == Rejected("schema:energy_wh")


def test_commitment_and_bid_set_sign_and_verify() -> None:
    digests = ("0" * 64,)
    listed = BidSet(community="c", interval=1, node="n", bid_digests=digests)
    commitment = Commitment(  # naming the set, which travels apart
        community="c", interval=1, node="n", bid_set_digest=listed.set_digest(),
        result_hash="e" * 64, mechanism="uniform",
    )
    for kind, body in (("commit", commitment), ("bidset", listed)):
        result = open_envelope(sign(kind, body, NODE_KEY).to_bytes())  # type: ignore[arg-type]
        assert isinstance(result, Verified) and result.body == body
    # a bid set is no commitment: the domain separation of the signed bytes holds
    crossed = sign("bidset", listed, NODE_KEY)
    forged = SignedEnvelope(kind="commit", body=crossed.body, signer=crossed.signer,
                            sig=crossed.sig)
    assert isinstance(verify(forged), Rejected)


def test_signing_a_model_under_the_wrong_kind_is_our_bug() -> None:
    with pytest.raises(TypeError, match="signs Commitment"):
        sign("commit", BID, NODE_KEY)


def test_open_envelope_reports_parse_reasons() -> None:
    assert open_envelope(b"{") == Rejected("malformed-json")
    assert open_envelope(b"x" * 10, max_size=5) == Rejected("oversized")


def test_key_round_trips() -> None:
    key = generate_key()
    assert private_key_to_raw(private_key_from_raw(private_key_to_raw(key))) == (
        private_key_to_raw(key)
    )
    assert public_key_hex(private_key_from_pem(private_key_to_pem(key))) == public_key_hex(key)
    pem = private_key_to_pem(key, password=b"hunter2")
    assert b"ENCRYPTED" in pem
    assert public_key_hex(private_key_from_pem(pem, password=b"hunter2")) == public_key_hex(key)
    assert public_key_hex(key.public_key()) == public_key_hex(key)


@pytest.mark.parametrize("data", [b"", b"\x00" * 31, b"\x00" * 33])
def test_raw_key_of_wrong_length(data: bytes) -> None:
    with pytest.raises(KeyMaterialError, match="32 bytes"):
        private_key_from_raw(data)


def test_pem_that_is_not_ed25519_or_not_pem() -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyMaterialError, match="not Ed25519"):
        private_key_from_pem(ec_pem)
    with pytest.raises(KeyMaterialError, match="cannot load"):
        private_key_from_pem(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyMaterialError, match="cannot load"):
        private_key_from_pem(private_key_to_pem(NODE_KEY, password=b"a"), password=b"b")


def _certificate(**changes: Any) -> MembershipCertificate:
    fields: dict[str, Any] = {
        "community": "elm-street", "node": "house-7", "public_key": public_key_hex(NODE_KEY),
        "bus": "b3", "import_limit_w": 11_000, "export_limit_w": 7_000,
        "valid_from_ms": 1_000, "valid_until_ms": 2_000,
    }
    return MembershipCertificate(**(fields | changes))


AUTH_HEX = public_key_hex(AUTHORITY)


@pytest.mark.parametrize(
    ("now_ms", "community", "expected"),
    [
        (1_000, "elm-street", None),
        (1_999, "elm-street", None),
        (999, "elm-street", "not-yet-valid"),
        (2_000, "elm-street", "expired"),
        (1_500, "oak-lane", "wrong-community"),
    ],
)
def test_certificate_validity(now_ms: int, community: str, expected: str | None) -> None:
    envelope = sign("cert", _certificate(), AUTHORITY)
    result = check_certificate(envelope, AUTH_HEX, community=community, now_ms=now_ms)
    if expected is None:
        assert isinstance(result, Verified) and result.body == _certificate()
    else:
        assert result == Rejected(expected)


def test_certificate_signed_by_someone_else() -> None:
    envelope = sign("cert", _certificate(), NODE_KEY)
    assert check_certificate(envelope, AUTH_HEX, community="elm-street", now_ms=1_500) == (
        Rejected("not-authority")
    )


def test_certificate_with_forged_signature() -> None:
    envelope = sign("cert", _certificate(), NODE_KEY).model_copy(update={"signer": AUTH_HEX})
    assert check_certificate(envelope, AUTH_HEX, community="elm-street", now_ms=1_500) == (
        Rejected("bad-signature")
    )


def test_revocation_applies_from_its_time_and_only_to_its_key() -> None:
    envelope = sign("cert", _certificate(), AUTHORITY)
    revocation = Revocation(
        community="elm-street", node="house-7", public_key=public_key_hex(NODE_KEY),
        revoked_at_ms=1_500,
    )
    other_key = revocation.model_copy(update={"public_key": "00" * 32})

    def check(now_ms: int, revocations: list[Revocation]) -> Verified | Rejected:
        return check_certificate(
            envelope, AUTH_HEX, community="elm-street", now_ms=now_ms, revocations=revocations
        )

    assert isinstance(check(1_499, [revocation]), Verified)
    assert check(1_500, [revocation]) == Rejected("revoked")
    assert isinstance(check(1_600, [other_key]), Verified)
    signed = open_envelope(sign("revoke", revocation, AUTHORITY).to_bytes(), expected_kind="revoke")
    assert isinstance(signed, Verified) and signed.body == revocation
