"""The market's message schemas and the signed envelope that carries them on the wire.

Units follow docs/architecture.md: energy in Wh, prices in µ/Wh, money in µ, time in ms since the
epoch, all ``int``. Models are strict (an ``int`` field refuses ``1.0`` and ``true``), frozen and
closed (``extra="forbid"``): a peer cannot smuggle fields past a signature check, and a value that
validated once cannot change afterwards.

A peer's bytes are parsed by :meth:`SignedEnvelope.from_bytes`, which raises :class:`MessageError`
with a short ``reason`` slug ("malformed-json", "oversized", "schema:<field>") meant to be used as a
counter label. Signatures are checked in :mod:`protocols.signing`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from itertools import pairwise
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from protocols.canonical import CanonicalError, canonical_bytes, digest

__all__ = [
    "Bid",
    "BidSet",
    "Commitment",
    "DEFAULT_MAX_ENVELOPE_BYTES",
    "KIND_MODELS",
    "Kind",
    "MAX_BIDS_PER_SET",
    "MAX_COMMIT_SEQ",
    "MAX_INLINE_BIDS",
    "MAX_ENERGY_WH",
    "MAX_PRICE",
    "MAX_STEPS",
    "MembershipCertificate",
    "Message",
    "MessageError",
    "Presence",
    "Revocation",
    "Settlement",
    "SignedEnvelope",
    "Step",
    "bid_set_digest",
    "curve_head",
    "message_digest",
    "schema_reason",
]

#: Largest energy one node may offer or ask for in one interval: 1 MWh, far above any home, small
#: enough that energy x price stays well inside 2**53 (JSON-safe for any peer implementation).
MAX_ENERGY_WH = 1_000_000
#: Largest price: 1,000,000 µ/Wh = 1,000 per kWh, orders of magnitude above any tariff.
MAX_PRICE = 1_000_000
#: Most steps a bid's curve may have: enough to price a battery's stored energy and a home's
#: deferrable loads separately, few enough that a curve stays a short message.
MAX_STEPS = 8
#: Largest signed quantity of money or counter value a message may carry (JSON-safe integer).
_MAX_JSON_INT = 2**53 - 1
#: Most wire messages are under 1 KiB; the largest is a bid set listing up to
#: ``MAX_BIDS_PER_SET`` digests (67 bytes each). Anything bigger is refused before parsing.
MAX_BIDS_PER_SET = 2048
#: A commitment carries its bid set inline up to this many digests (17 KB); a longer set is named
#: by digest only and sent once as a :class:`BidSet`.
MAX_INLINE_BIDS = 256
#: A member votes at most three times an interval: at clearing, in the union round, and joining
#: a quorum (``protocols.market.session``); a commitment numbered past that is no honest vote.
MAX_COMMIT_SEQ = 2
DEFAULT_MAX_ENVELOPE_BYTES = 160 * 1024

NodeId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
CommunityId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
BusId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
Slug = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,31}$")]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
PublicKeyHex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
SignatureHex = Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")]
Interval = Annotated[int, Field(ge=0, le=_MAX_JSON_INT)]
TimeMs = Annotated[int, Field(ge=0, le=_MAX_JSON_INT)]
Counter = Annotated[int, Field(ge=0, le=_MAX_JSON_INT)]
SignedInt = Annotated[int, Field(ge=-_MAX_JSON_INT, le=_MAX_JSON_INT)]
EnergyWh = Annotated[int, Field(ge=0, le=MAX_ENERGY_WH)]
SignedEnergyWh = Annotated[int, Field(ge=-MAX_ENERGY_WH, le=MAX_ENERGY_WH)]

Kind = Literal["bid", "commit", "bidset", "settle", "cert", "revoke", "presence"]


class MessageError(ValueError):
    """A peer sent bytes we refuse; ``reason`` is a short, low-cardinality slug for counters."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def schema_reason(error: ValidationError) -> str:
    """``"schema:<field path>"`` for the first problem pydantic found, or ``"curve:<problem>"`` for
    a bid curve our own validator refused (:class:`Bid`).

    List indices are dropped and unknown field names are collapsed to ``extra-field``: the reason is
    a metrics label, and a peer must not be able to mint new label values by inventing keys (the
    curve problems are a fixed set, named in :class:`Bid`).
    """
    first = error.errors()[0]
    if first["type"] == _CURVE:
        return f"curve:{first['ctx']['problem']}"
    if first["type"] == "extra_forbidden":
        return "schema:extra-field"
    parts = [str(part) for part in first["loc"] if isinstance(part, str)]
    return "schema:" + (".".join(parts) or "root")


class _Frozen(BaseModel):
    """Strict, frozen, closed: the common configuration of every wire model."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


_CURVE = "curve"


def _curve_error(problem: str, detail: str) -> PydanticCustomError:
    context = {"problem": problem, "detail": detail}
    return PydanticCustomError(_CURVE, "{problem}: {detail}", context)


class Step(NamedTuple):
    """``wh`` offered at ``price`` µ/Wh: one step of a bid's curve, ``[wh, price]`` on the wire."""

    wh: int
    price: int


class Bid(_Frozen):
    """One node's offer for one interval: what it wants to buy or sell, and its limit price.

    A curve. Energy is not worth the same to a home for every Wh (a battery's first kWh, the
    deferrable load that can wait), so a bid may carry ``steps``: up to ``MAX_STEPS`` of ``[wh,
    price]``, the cheapest energy first for a seller (prices strictly ascending) and the most
    needed first for a buyer (strictly descending). ``energy_wh`` is then the curve's total and
    ``limit_price`` its first step's price (the price at which the node starts to trade), so
    whatever reads only those two (the certificate's limits, a withdrawal, the owner's view)
    still reads the whole offer. A one-step bid is written without ``steps`` (one byte form per
    offer), so its bytes and digest are the ones of a bid before curves existed. Problems with a
    curve are refused as ``curve:<problem>``: ``one-step``, ``too-many-steps``, ``step-energy``
    (a step's Wh not in 1..``MAX_ENERGY_WH``), ``step-price`` (not in 0..``MAX_PRICE``),
    ``not-monotone``, ``energy-sum`` (the steps do not add up to ``energy_wh``), ``first-price``
    (the first step's price is not ``limit_price``).

    ``seq`` orders a node's bids for the same interval: a higher ``seq`` replaces a lower one,
    and two *different* bids with the same ``seq`` are equivocation (the session keeps both as
    evidence). ``energy_wh`` 0 withdraws the node's offer: a bid a node can no longer keep is
    replaced by one that clears to nothing (a retained bid, once heard, cannot be unsent).
    ``created_ms`` is the signer's own clock; it is only used to order bids in the continuous double
    auction replay, never trusted as a deadline.
    """

    community: CommunityId
    interval: Interval
    node: NodeId
    seq: Annotated[int, Field(ge=0, le=_MAX_JSON_INT)]
    side: Literal["buy", "sell"]
    energy_wh: Annotated[int, Field(ge=0, le=MAX_ENERGY_WH)]
    limit_price: Annotated[int, Field(ge=0, le=MAX_PRICE)]
    created_ms: TimeMs
    steps: tuple[Step, ...] = Field(default=(), exclude_if=lambda steps: not steps)

    @field_validator("steps")
    @classmethod
    def _curve(cls, steps: tuple[Step, ...]) -> tuple[Step, ...]:
        # Only a given value is validated: the default (no steps) is never an explicit [] or null.
        if len(steps) < 2:
            raise _curve_error("one-step", "a one-step bid is written without steps")
        if len(steps) > MAX_STEPS:
            raise _curve_error("too-many-steps", f"{len(steps)} steps, at most {MAX_STEPS}")
        for wh, price in steps:
            if not 0 < wh <= MAX_ENERGY_WH:
                raise _curve_error("step-energy", f"{wh} Wh, need 1..{MAX_ENERGY_WH}")
            if not 0 <= price <= MAX_PRICE:
                raise _curve_error("step-price", f"{price}, need 0..{MAX_PRICE}")
        return steps

    @model_validator(mode="after")
    def _curve_matches(self) -> Bid:
        steps = self.steps
        if not steps:
            return self
        sign = 1 if self.side == "sell" else -1
        if any(sign * (b.price - a.price) <= 0 for a, b in pairwise(steps)):
            order = "ascend" if self.side == "sell" else "descend"
            raise _curve_error("not-monotone", f"{self.side} steps must strictly {order} in price")
        total = sum(step.wh for step in steps)
        if total != self.energy_wh:
            raise _curve_error("energy-sum", f"steps add up to {total} Wh, energy_wh is "
                               f"{self.energy_wh}")
        if steps[0].price != self.limit_price:
            raise _curve_error("first-price", f"first step at {steps[0].price}, limit_price is "
                               f"{self.limit_price}")
        return self

    def curve(self) -> tuple[Step, ...]:
        """The bid's steps, best first; a one-step bid is its one step."""
        return self.steps or (Step(self.energy_wh, self.limit_price),)


def curve_head(curve: Sequence[Step], wh: int) -> tuple[Step, ...]:
    """The first ``wh`` of ``curve``, best steps first: what is left of an offer cut or capped to
    ``wh`` (the rule :func:`protocols.clearing.orders_from_bids` clips a certificate's limit by).
    """
    head: list[Step] = []
    for step in curve:
        if wh <= 0:
            break
        head.append(Step(min(step.wh, wh), step.price))
        wh -= step.wh
    return tuple(head)


def bid_set_digest(bid_digests: tuple[str, ...]) -> str:
    """Digest of a set of bid digests: the canonical hash of their sorted list.

    Sorting makes the set's identity independent of the order in which a gateway received the bids.
    """
    return digest(sorted(bid_digests))


class Commitment(_Frozen):
    """A gateway's statement "I cleared the bid set with this digest, and got this result".

    ``bid_set_digest`` is :func:`bid_set_digest` of the digests of the bids cleared;
    ``result_hash`` is :func:`protocols.clearing.result_hash` of the result (with the network
    fees, see :func:`protocols.market.session.agreed_hash`). A set of up to ``MAX_INLINE_BIDS``
    travels inline in ``bid_digests`` (sorted, duplicate-free, matching the digest), so a
    member of a street joins a majority or judges a dissent with no round trip. A longer set is
    ``None`` here and travels once, as the committer's :class:`BidSet`, fetched only by a peer
    that needs it: inline, it was 67 KB per commitment at 1,000 members, and every member parsed
    every one.

    ``tariffs`` is the (retail, feed-in) µ/Wh pair the committer cleared and settles the
    interval at, where the community prices intervals by a tariff schedule
    (:mod:`protocols.market.tariffs`); absent, and left out of the body, where the tariffs are
    fixed.

    ``seq`` numbers the committer's votes for the interval: 0 its first, one more at each
    re-vote. A higher one replaces a lower whatever order the broker delivers them in, and two
    different commitments with one ``seq`` are an equivocation, as two bids with one ``seq``
    are: by arrival order alone, a member that signs two votes would count for one result at
    one peer and for another at the next. Left out of the body at 0, so a first vote's bytes
    are what they were before it.
    """

    community: CommunityId
    interval: Interval
    node: NodeId
    bid_digests: Annotated[tuple[Sha256Hex, ...], Field(max_length=MAX_INLINE_BIDS)] | None = None
    bid_set_digest: Sha256Hex
    result_hash: Sha256Hex
    mechanism: Slug
    tariffs: tuple[Annotated[int, Field(gt=0, le=MAX_PRICE)],
                   Annotated[int, Field(ge=0, lt=MAX_PRICE)]] | None = Field(
        default=None, exclude_if=lambda tariffs: tariffs is None)
    seq: int = Field(default=0, ge=0, le=MAX_COMMIT_SEQ, exclude_if=lambda seq: seq == 0)

    @field_validator("tariffs")
    @classmethod
    def _spread(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and value[0] <= value[1]:
            raise ValueError("the retail price must be above the feed-in price")
        return value

    @field_validator("bid_digests")
    @classmethod
    def _sorted_unique(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and any(a >= b for a, b in zip(value, value[1:], strict=False)):
            raise ValueError("bid digests must be sorted and unique")
        return value

    @model_validator(mode="after")
    def _set_digest_matches(self) -> Commitment:
        if self.bid_digests is not None and self.bid_set_digest != bid_set_digest(self.bid_digests):
            raise ValueError("bid_set_digest does not match bid_digests")
        return self


class BidSet(_Frozen):
    """The digests of the bids a gateway cleared for one interval, the set its commitment names.

    Sorted and duplicate-free so that two gateways with the same set send equal bodies; a peer
    matches it to a commitment by :meth:`set_digest`.
    """

    community: CommunityId
    interval: Interval
    node: NodeId
    bid_digests: Annotated[tuple[Sha256Hex, ...], Field(max_length=MAX_BIDS_PER_SET)]

    @field_validator("bid_digests")
    @classmethod
    def _sorted_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(a >= b for a, b in zip(value, value[1:], strict=False)):
            raise ValueError("bid digests must be sorted and unique")
        return value

    def set_digest(self) -> str:
        """:func:`bid_set_digest` of the list, computed once per parsed message: every member
        matches a peer's list to its commitment, and hashing up to ``MAX_BIDS_PER_SET`` digests
        again at each look was a gateway's largest cost in a big community's union round."""
        return self._set_digest

    @cached_property
    def _set_digest(self) -> str:
        return bid_set_digest(self.bid_digests)


class Settlement(_Frozen):
    """What one node actually did in an interval, backed by its meter's tagged counters.

    Sign convention as for power in docs/architecture.md: + = towards the home (bought, imported,
    paid), − = away from it (sold, exported, received).

    - ``cleared_wh``: the node's net cleared P2P position (+ bought, − sold).
    - ``delivered_wh``: the node's metered net energy over the interval, same sign convention; a
      seller that delivered everything it sold has ``delivered_wh == cleared_wh``.
    - ``bus_wh``: the part of ``delivered_wh`` that went over the community's DC bus (its DC-DC
      converter's bus-side energy), 0 for a home on AC only; the rest went through the meter.
    - ``grid_import_wh`` / ``grid_export_wh`` (>= 0): what the grid balanced for this node (unfilled
      demand, shortfall, excess), priced at the retail and feed-in tariffs.
    - ``money``: net money for the interval, µ, + = the node paid.
    - ``meter_import_wh`` / ``meter_export_wh``: the meter's cumulative counters at the end of the
      interval, ``meter_seq`` its reading counter and ``meter_tag`` the meter's HMAC over them
      (hex), so a peer can check the reading came from the provisioned meter and was not replayed.
    """

    community: CommunityId
    interval: Interval
    node: NodeId
    cleared_wh: SignedEnergyWh
    delivered_wh: SignedEnergyWh
    bus_wh: SignedEnergyWh = 0
    grid_import_wh: EnergyWh
    grid_export_wh: EnergyWh
    money: SignedInt
    meter_import_wh: Counter
    meter_export_wh: Counter
    meter_seq: Counter
    meter_tag: Annotated[str, Field(pattern=r"^[0-9a-f]{16,128}$")]


class MembershipCertificate(_Frozen):
    """The community authority's statement that a public key belongs to a member node.

    Carries what the market needs to know about the member: its bus on the feeder (network fees and
    line limits) and its import/export power limits (W, both >= 0). Valid in
    ``[valid_from_ms, valid_until_ms)``. Revocation is a separate signed :class:`Revocation` rather
    than a flag here: a certificate is retained on the broker and must stay verifiable as issued,
    and a revocation has to outlive any copy of the certificate that peers still hold.
    """

    community: CommunityId
    node: NodeId
    public_key: PublicKeyHex
    bus: BusId
    import_limit_w: Annotated[int, Field(ge=0, le=_MAX_JSON_INT)]
    export_limit_w: Annotated[int, Field(ge=0, le=_MAX_JSON_INT)]
    valid_from_ms: TimeMs
    valid_until_ms: TimeMs

    @model_validator(mode="after")
    def _window(self) -> MembershipCertificate:
        if self.valid_until_ms <= self.valid_from_ms:
            raise ValueError("valid_until_ms must be after valid_from_ms")
        return self


class Revocation(_Frozen):
    """The authority withdraws ``public_key`` of ``node`` from ``revoked_at_ms`` on.

    Names the key, not only the node, so that re-admitting a node with a fresh key is not undone by
    an old revocation.
    """

    community: CommunityId
    node: NodeId
    public_key: PublicKeyHex
    revoked_at_ms: TimeMs


class Presence(_Frozen):
    """A member's word that its gateway is connected to the broker (``online``) or no longer is.

    Presence decides who counts towards a quorum, so it is signed by the member like everything
    else: anyone who can publish on a presence topic (an outsider on a broker without an ACL)
    could otherwise make every node look offline. ``session`` numbers the member's connections
    (strictly increasing, across restarts too): each connection publishes its ``online`` and
    leaves the ``offline`` of the same session, signed in advance, as its last will. Of two
    presences of one node the higher ``(session, online < offline)`` holds, so a replayed old
    ``offline`` never overrides a newer ``online``, and a will that fires after the node has
    reconnected (the broker ending the old session late) is older than the new ``online``.
    """

    community: CommunityId
    node: NodeId
    session: Annotated[int, Field(ge=0, le=_MAX_JSON_INT)]
    state: Literal["online", "offline"]

    def rank(self) -> tuple[int, bool]:
        """Order of two presences of one node: the higher one holds."""
        return self.session, self.state == "offline"


Message = Bid | Commitment | BidSet | Settlement | MembershipCertificate | Revocation | Presence



def message_digest(body: Message) -> str:
    """The identity of a message body: digest of its canonical JSON (e.g. a bid in a commitment).

    Ed25519 signatures are deterministic and the body names its node, so the body alone identifies
    the signed message; leaving the signature out keeps the digest computable from the model.
    """
    return digest(body.model_dump(mode="json"))


KIND_MODELS: dict[str, type[Message]] = {
    "bid": Bid,
    "commit": Commitment,
    "bidset": BidSet,
    "settle": Settlement,
    "cert": MembershipCertificate,
    "revoke": Revocation,
    "presence": Presence,
}


def _no_floats(text: str) -> int:
    raise ValueError(f"float {text!r}")


def _no_constants(text: str) -> int:
    raise ValueError(f"constant {text}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


class SignedEnvelope(_Frozen):
    """A message body with its signer's public key and Ed25519 signature, as sent on the wire.

    ``body`` is kept as plain JSON data (not a parsed model) so that the signature is checked over
    exactly what the signer signed; :func:`protocols.signing.verify` turns it into a model.
    """

    kind: Kind
    body: dict[str, Any]
    signer: PublicKeyHex
    sig: SignatureHex

    @field_validator("body")
    @classmethod
    def _canonical_body(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            canonical_bytes(value)
        except CanonicalError as exc:
            raise ValueError(str(exc)) from exc
        return value

    def to_bytes(self) -> bytes:
        """The canonical JSON wire form."""
        return canonical_bytes(
            {"kind": self.kind, "body": self.body, "signer": self.signer, "sig": self.sig}
        )

    @classmethod
    def from_bytes(
        cls, data: bytes, *, max_size: int = DEFAULT_MAX_ENVELOPE_BYTES
    ) -> SignedEnvelope:
        """Parse a peer's payload; raises :class:`MessageError` with the reason it was refused.

        Only the canonical encoding is accepted ("non-canonical" otherwise): a message then has
        exactly one byte form, so retained copies, equivocation evidence and deduplication can
        compare bytes. Floats, NaN and duplicate keys are "malformed-json".
        """
        if len(data) > max_size:
            raise MessageError("oversized", f"{len(data)} > {max_size} bytes")
        try:
            raw = json.loads(
                data,
                parse_float=_no_floats,
                parse_constant=_no_constants,
                object_pairs_hook=_no_duplicates,
            )
        except (ValueError, RecursionError) as exc:
            raise MessageError("malformed-json", str(exc)[:200]) from exc
        if not isinstance(raw, dict):
            raise MessageError("schema:root", "envelope is not a JSON object")
        try:
            envelope = cls.model_validate(raw)
        except ValidationError as exc:
            raise MessageError(schema_reason(exc), str(exc.errors()[0]["msg"])) from exc
        if envelope.to_bytes() != data:
            raise MessageError("non-canonical", "bytes differ from the canonical encoding")
        return envelope
