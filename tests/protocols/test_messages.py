"""Message schemas and the wire envelope: strictness, and one specific reason per bad payload."""

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from protocols.canonical import canonical_bytes
from protocols.messages import (
    MAX_INLINE_BIDS,
    Bid,
    BidSet,
    Commitment,
    MembershipCertificate,
    MessageError,
    SignedEnvelope,
    bid_set_digest,
    message_digest,
)

BID: dict[str, Any] = {
    "community": "elm-street",
    "interval": 12,
    "node": "house-7",
    "seq": 0,
    "side": "sell",
    "energy_wh": 420,
    "limit_price": 150,
    "created_ms": 1_700_000_000_000,
}
SIGNER = "ab" * 32
SIG = "cd" * 64


def envelope_bytes(**changes: Any) -> bytes:
    raw = {"kind": "bid", "body": dict(BID), "signer": SIGNER, "sig": SIG} | changes
    return canonical_bytes(raw)


def test_valid_bid_is_frozen() -> None:
    bid = Bid(**BID)
    with pytest.raises(ValidationError):
        bid.energy_wh = 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("energy_wh", 420.0),
        ("energy_wh", True),
        ("energy_wh", "420"),
        ("energy_wh", -1),
        ("energy_wh", 1_000_001),
        ("limit_price", -1),
        ("interval", -1),
        ("side", "hold"),
        ("node", "House-7"),
        ("node", "-house"),
        ("node", "h" * 33),
        ("community", ""),
    ],
)
def test_bid_refuses_bad_fields(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        Bid(**(BID | {field: value}))
    assert caught.value.errors()[0]["loc"][0] == field


def test_bid_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        Bid(**(BID | {"bonus": 1}))


def test_bid_set_requires_sorted_unique_digests_and_names_the_set() -> None:
    digests = tuple(sorted(["1" * 64, "2" * 64]))
    good: dict[str, Any] = dict(community="c", interval=1, node="n", bid_digests=digests)
    assert BidSet(**good).set_digest() == bid_set_digest(tuple(reversed(digests)))
    with pytest.raises(ValidationError, match="sorted"):
        BidSet(**(good | {"bid_digests": tuple(reversed(digests))}))
    with pytest.raises(ValidationError, match="sorted"):
        BidSet(**(good | {"bid_digests": (digests[0], digests[0])}))
    with pytest.raises(ValidationError):
        BidSet(**(good | {"bid_digests": ("not hex",)}))


def test_commitment_lists_a_short_set_inline_and_names_a_long_one() -> None:
    digests = tuple(sorted(["1" * 64, "2" * 64]))
    good: dict[str, Any] = dict(
        community="c", interval=1, node="n", bid_digests=digests,
        bid_set_digest=bid_set_digest(digests), result_hash="f" * 64, mechanism="uniform",
    )
    assert Commitment(**good).bid_set_digest == bid_set_digest(tuple(reversed(digests)))
    with pytest.raises(ValidationError, match="sorted"):
        Commitment(**(good | {"bid_digests": tuple(reversed(digests))}))
    with pytest.raises(ValidationError, match="does not match"):
        Commitment(**(good | {"bid_set_digest": "0" * 64}))
    named = Commitment(**(good | {"bid_digests": None}))  # by reference: the list travels apart
    assert named.bid_digests is None and named.bid_set_digest == bid_set_digest(digests)
    too_long = tuple(f"{i:064x}" for i in range(MAX_INLINE_BIDS + 1))
    with pytest.raises(ValidationError):
        Commitment(**(good | {"bid_digests": too_long, "bid_set_digest": bid_set_digest(
            too_long)}))


def test_certificate_window_must_be_non_empty() -> None:
    with pytest.raises(ValidationError, match="valid_until_ms"):
        MembershipCertificate(
            community="c", node="n", public_key=SIGNER, bus="b1", import_limit_w=1,
            export_limit_w=1, valid_from_ms=10, valid_until_ms=10,
        )


def test_message_digest_depends_on_content() -> None:
    assert message_digest(Bid(**BID)) == message_digest(Bid(**BID))
    assert message_digest(Bid(**BID)) != message_digest(Bid(**(BID | {"seq": 1})))


def test_envelope_round_trip() -> None:
    data = envelope_bytes()
    envelope = SignedEnvelope.from_bytes(data)
    assert envelope.to_bytes() == data
    assert envelope.body == BID


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"kind":', "malformed-json"),
        (b"\xff\xfe", "malformed-json"),
        (envelope_bytes().replace(b"420", b"420.0"), "malformed-json"),
        (envelope_bytes().replace(b"420", b"NaN"), "malformed-json"),
        (envelope_bytes().replace(b'{"body"', b'{"kind":"bid","body"'), "malformed-json"),
        (b"[1,2]", "schema:root"),
        (envelope_bytes(kind="gossip"), "schema:kind"),
        (envelope_bytes(extra=1), "schema:extra-field"),
        (envelope_bytes(signer="AB" * 32), "schema:signer"),
        (envelope_bytes(sig="cd"), "schema:sig"),
        (envelope_bytes().replace(b'"kind":"bid"', b'"kind": "bid"'), "non-canonical"),
        (b" " + envelope_bytes(), "non-canonical"),
    ],
)
def test_bad_payloads_name_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MessageError) as caught:
        SignedEnvelope.from_bytes(data)
    assert caught.value.reason == reason


def test_oversized_is_refused_before_parsing() -> None:
    with pytest.raises(MessageError) as caught:
        SignedEnvelope.from_bytes(b"[" * 5000, max_size=4096)
    assert caught.value.reason == "oversized"


def test_deep_nesting_is_malformed_not_a_crash() -> None:
    with pytest.raises(MessageError) as caught:
        SignedEnvelope.from_bytes(b"[" * 100_000 + b"]" * 100_000, max_size=1_000_000)
    assert caught.value.reason == "malformed-json"


def test_invented_keys_do_not_become_counter_labels() -> None:
    for key in ("a", "zz", "x-1"):
        with pytest.raises(MessageError) as caught:
            SignedEnvelope.from_bytes(envelope_bytes(**{key: 1}))
        assert caught.value.reason == "schema:extra-field"


@settings(max_examples=300)
@given(st.binary(max_size=300) | st.builds(lambda b: envelope_bytes()[: len(b)], st.binary()))
def test_any_bytes_parse_or_raise_message_error(data: bytes) -> None:
    try:
        envelope = SignedEnvelope.from_bytes(data)
    except MessageError as exc:
        assert exc.reason
    else:
        assert envelope.to_bytes() == data
