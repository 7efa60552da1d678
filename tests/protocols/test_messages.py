"""Message schemas and the wire envelope: strictness, and one specific reason per bad payload."""

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from protocols.canonical import canonical_bytes
from protocols.messages import (
    MAX_COMMIT_SEQ,
    MAX_INLINE_BIDS,
    Bid,
    BidSet,
    Commitment,
    MembershipCertificate,
    MessageError,
    SignedEnvelope,
    Step,
    bid_set_digest,
    message_digest,
    schema_reason,
)
from protocols.signing import (
    Rejected,
    Verified,
    generate_key,
    open_envelope,
    public_key_hex,
    signed_bytes,
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


# --- bid curves -------------------------------------------------------------------------------

CURVE: dict[str, Any] = BID | {"energy_wh": 700, "limit_price": 90,
                               "steps": ((400, 90), (200, 150), (100, 240))}


def test_a_one_step_bid_keeps_its_bytes_and_digest() -> None:
    """Bids signed before curves existed still verify: a one-step bid is written without
    ``steps`` and its digest is the one computed at 6266989."""
    bid = Bid(**BID)
    assert "steps" not in bid.model_dump(mode="json")
    assert message_digest(bid) == "8f09045f90b2162e54fe1b50c80594264d75eaf02908fde52ecb88d98fd1e1a5"
    assert bid.curve() == (Step(420, 150),)


def test_a_curve_round_trips_and_reads_as_its_steps() -> None:
    bid = Bid(**CURVE)
    body = bid.model_dump(mode="json")
    assert body["steps"] == [[400, 90], [200, 150], [100, 240]]
    assert Bid.model_validate_json(canonical_bytes(body)) == bid
    assert bid.curve() == (Step(400, 90), Step(200, 150), Step(100, 240))
    buy = Bid(**(CURVE | {"side": "buy", "limit_price": 240,
                          "steps": ((400, 240), (200, 150), (100, 90))}))
    assert buy.curve()[0] == Step(400, 240)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"steps": ((700, 90),)}, "curve:one-step"),
        ({"steps": ()}, "curve:one-step"),
        ({"energy_wh": 900, "steps": tuple((100, 90 + i) for i in range(9))},
         "curve:too-many-steps"),
        ({"steps": ((700, 90), (0, 150))}, "curve:step-energy"),
        ({"energy_wh": 1_000_001, "steps": ((1_000_001, 90), (1, 150))}, "schema:energy_wh"),
        ({"energy_wh": 1_000_000, "steps": ((999_999, 90), (1, 1_000_001))}, "curve:step-price"),
        ({"steps": ((400, 90), (200, 150), (100, 150))}, "curve:not-monotone"),
        ({"steps": ((400, 90), (200, 80), (100, 240))}, "curve:not-monotone"),
        ({"side": "buy"}, "curve:not-monotone"),
        ({"steps": ((400, 90), (200, 150), (99, 240))}, "curve:energy-sum"),
        ({"energy_wh": 0}, "curve:energy-sum"),
        ({"limit_price": 100}, "curve:first-price"),
        ({"steps": ((400, 90), (300, True))}, "schema:steps"),
        ({"steps": None}, "schema:steps"),
    ],
)
def test_a_bad_curve_is_refused_with_its_reason(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Bid(**(CURVE | changes))
    assert schema_reason(caught.value) == reason


_ANY = st.one_of(st.integers(-5, 2_000_000), st.booleans(), st.none(), st.text(max_size=3))
_PAIR = st.lists(st.integers(-5, 1_000_002), min_size=2, max_size=2)


@st.composite
def _curves(draw: st.DrawFn) -> list[list[int]]:
    """A monotone curve of 1 to 11 steps for either side, mostly in bounds, then maybe spoiled:
    a step's Wh or price pushed out of bounds, two prices made equal, or the steps reversed."""
    count = draw(st.integers(1, 11))
    sign = draw(st.sampled_from([1, -1]))
    price = draw(st.integers(0, 1_000_000))
    steps = []
    for _ in range(count):
        steps.append([draw(st.integers(1, 5000)), price])
        price += sign * draw(st.integers(1, 50))
    spoil = draw(st.sampled_from(["none", "none", "energy", "price", "equal", "reverse"]))
    at = draw(st.integers(0, count - 1))
    if spoil == "energy":
        steps[at][0] = draw(st.sampled_from([0, -1, 1_000_001]))
    elif spoil == "price":
        steps[at][1] = draw(st.sampled_from([-1, 1_000_001]))
    elif spoil == "equal" and count > 1:
        steps[at][1] = steps[at - 1][1]
    elif spoil == "reverse":
        steps.reverse()
    return steps


_STEPS = st.one_of(_ANY, st.lists(st.one_of(_PAIR, st.lists(_ANY, max_size=3), _ANY),
                                  max_size=4), _curves(), _curves())


def expected_reason(side: str, energy: int, limit: int, steps: object) -> str | None:
    """What the schema must say about ``steps`` (the other fields valid), or None: valid."""
    if not isinstance(steps, list) or not all(
        isinstance(s, list) and len(s) == 2 and all(type(v) is int for v in s) for s in steps
    ):
        return "schema:steps"
    if len(steps) < 2:
        return "curve:one-step"
    if len(steps) > 8:
        return "curve:too-many-steps"
    for wh, price in steps:
        if not 0 < wh <= 1_000_000:
            return "curve:step-energy"
        if not 0 <= price <= 1_000_000:
            return "curve:step-price"
    sign = 1 if side == "sell" else -1
    if any(sign * (b[1] - a[1]) <= 0 for a, b in zip(steps, steps[1:], strict=False)):
        return "curve:not-monotone"
    if sum(wh for wh, _ in steps) != energy:
        return "curve:energy-sum"
    if steps[0][1] != limit:
        return "curve:first-price"
    return None


@settings(max_examples=600, deadline=None)
@given(
    side=st.sampled_from(["buy", "sell"]),
    steps=_STEPS,
    energy=st.integers(0, 1_000_000),
    limit=st.integers(0, 1_000_000),
    matched=st.sampled_from(["nothing", "energy", "energy", "both", "both", "both"]),
)
def test_a_signed_malformed_curve_gets_its_reason_and_never_an_exception(
    side: str, steps: object, energy: int, limit: int, matched: str
) -> None:
    """A peer's signed bid with any ``steps`` is either verified or rejected with the reason the
    rules give (``curve:<problem>`` or ``schema:steps``), never an exception. ``matched`` makes
    energy (and the limit) agree with the steps, so each of the curve's own rules is reached."""
    if matched != "nothing" and isinstance(steps, list) and steps and all(
        isinstance(s, list) and len(s) == 2 and all(type(v) is int for v in s) for s in steps
    ):
        energy = min(max(sum(s[0] for s in steps), 0), 1_000_000)
        if matched == "both":
            limit = min(max(steps[0][1], 0), 1_000_000)
    body = dict(BID) | {"side": side, "energy_wh": energy, "limit_price": limit, "steps": steps}
    key = generate_key()
    data = SignedEnvelope(kind="bid", body=body, signer=public_key_hex(key),
                          sig=key.sign(signed_bytes("bid", body)).hex()).to_bytes()
    opened = open_envelope(data, expected_kind="bid")
    reason = expected_reason(side, energy, limit, steps)
    if reason is None:
        assert isinstance(opened, Verified) and opened.body.curve() == tuple(map(tuple, steps))
    else:
        assert opened == Rejected(reason)


def _opened_commitment(**field: object) -> Verified | Rejected:
    """A commitment signed with ``field`` set to whatever a peer likes, opened as a receiver
    opens it."""
    digests = ("1" * 64,)
    body: dict[str, Any] = dict(
        community="c", interval=1, node="n", bid_digests=list(digests),
        bid_set_digest=bid_set_digest(digests), result_hash="f" * 64, mechanism="uniform",
        **field)
    key = generate_key()
    data = SignedEnvelope(kind="commit", body=body, signer=public_key_hex(key),
                          sig=key.sign(signed_bytes("commit", body)).hex()).to_bytes()
    return open_envelope(data, expected_kind="commit")


@settings(max_examples=300, deadline=None)
@given(tariffs=st.one_of(_ANY, st.lists(_ANY, max_size=4),
                         st.lists(st.integers(-5, 1_000_002), min_size=2, max_size=2)))
def test_a_signed_commitment_with_any_tariffs_is_opened_within_the_band_or_refused(
    tariffs: object,
) -> None:
    """A peer signs whatever it likes as a commitment's ``tariffs``: it is opened only as
    retail > feed-in >= 0 within ``MAX_PRICE``, or refused as ``schema:tariffs``, never an
    exception (a pair outside the band would otherwise reach settlement's arithmetic)."""
    opened = _opened_commitment(tariffs=tariffs)
    if isinstance(opened, Verified):
        got = opened.body.tariffs
        assert got is None or (type(got[0]) is int and type(got[1]) is int
                               and 0 <= got[1] < got[0] <= 1_000_000)
        assert tariffs is None or got == tuple(tariffs)  # type: ignore[arg-type]
    else:
        assert opened == Rejected("schema:tariffs"), opened


@settings(max_examples=200, deadline=None)
@given(seq=st.one_of(_ANY, st.integers(-3, MAX_COMMIT_SEQ + 3)))
def test_a_signed_commitment_with_any_seq_is_opened_within_its_votes_or_refused(
    seq: object,
) -> None:
    """A peer signs whatever it likes as a commitment's ``seq``: it is opened only as a whole
    number of votes an honest member could cast (0 to ``MAX_COMMIT_SEQ``), or refused as
    ``schema:seq``, never an exception; a first vote (0) travels without it."""
    opened = _opened_commitment(seq=seq)
    if isinstance(opened, Verified):
        assert type(seq) is int and 0 <= seq <= MAX_COMMIT_SEQ
        assert opened.body.seq == seq
        assert (b'"seq"' in canonical_bytes(opened.body.model_dump(mode="json"))) == (seq > 0)
    else:
        assert opened == Rejected("schema:seq"), opened
