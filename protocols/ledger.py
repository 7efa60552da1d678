"""The ledger format: a signed header naming its node, then one signed block per interval, chained.

A block records what the community agreed for one interval and what this node settled, so an
owner (or an auditor) can replay the money: the digest of the bid set, the hash of the clearing
result, the quorum's signed commitments to it and the signed settlements. Three kinds of
signature make a rewrite visible (docs/reliability.md, "ledger"):

- the **header** carries the node's membership certificate (signed by the community authority)
  and is signed by the node's key: the ledger names its node, and another home's ledger, or a
  header made for another key, does not pass as this one;
- **block 0** chains to the header's digest and every later block to the one before it, and each
  block's hash is signed by the node's key: an edit followed by a rehash of the chain is caught
  by whoever does not hold that key;
- an agreed block carries the **commitments** of the quorum that agreed it (each signed by its
  member, whose certificate the file keeps) and this node's **settlement**: even the key's
  holder cannot change an agreed result without forging the other members' signatures, and a
  changed settlement no longer matches the one the neighbours hold (:func:`compare`).

What no single file can show is a tail cut off after the last block: that takes a second
witness, a neighbour's ledger holding this node's signed settlements (:func:`compare`). Nor does
a file show how many commitments a quorum needed (that depends on who was present at each gate,
which nothing records): the checks are that every commitment is a certified member's, and,
against a neighbour's ledger, that the results both agreed are the same.

Pure: rows go in as text, findings come out as :class:`Check` values; the SQLite file is
``gateway/ledger.py``'s.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocols.canonical import canonical_bytes, digest
from protocols.messages import Commitment, MembershipCertificate, Settlement, SignedEnvelope
from protocols.signing import (
    Rejected,
    key_problem,
    public_key_hex,
    sign_record,
    verify,
    verify_record,
)

LEDGER_FORMAT: Literal["gridpeer-ledger/2"] = "gridpeer-ledger/2"
_HEADER_KIND = "ledger-header"
_BLOCK_KIND = "ledger-block"
_MISSING = object()
_FIGURES = ("cleared_wh", "delivered_wh", "grid_import_wh", "grid_export_wh", "money")
"""The settled figures a block's ``outcome`` shares with its signed settlement."""


class LedgerHeader(BaseModel):
    """The record a ledger starts with: its format and the certificate of the node writing it."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    format: Literal["gridpeer-ledger/2"]
    certificate: SignedEnvelope

    def member(self) -> MembershipCertificate:
        """The certificate's body (its signature is :func:`audit`'s to check)."""
        return MembershipCertificate.model_validate(self.certificate.body)


def new_header(certificate: SignedEnvelope, key: Ed25519PrivateKey) -> tuple[LedgerHeader, str]:
    """The header of a new ledger for the node ``certificate`` admits, and its signature by
    ``key``; ``ValueError`` if the certificate names another key."""
    header = LedgerHeader(format=LEDGER_FORMAT, certificate=certificate)
    if header.member().public_key != public_key_hex(key):
        raise ValueError("the certificate names another key than the one signing the ledger")
    return header, sign_record(_HEADER_KIND, header.model_dump(), key)


def header_digest(header: LedgerHeader, sig: str) -> str:
    """The hash block 0 chains to: the header with its signature."""
    return digest({"header": header.model_dump(), "sig": sig})


class Block(BaseModel):
    """One settled interval. ``content`` holds the agreed record as canonical-JSON-able data."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    height: int = Field(ge=0)
    interval: int = Field(ge=0)
    status: str = Field(pattern=r"^(agreed|abstained)$")
    prev_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    content: dict[str, Any]

    def digest(self) -> str:
        """sha256 over the canonical bytes of every field: the next block's ``prev_hash``."""
        return hashlib.sha256(canonical_bytes(self.model_dump())).hexdigest()


def next_block(
    *, prev: Block | None, genesis: str, interval: int, status: str, content: dict[str, Any]
) -> Block:
    """The block that follows ``prev`` (or the first block, chained to ``genesis``, the
    :func:`header_digest`, when ``prev`` is None)."""
    if prev is not None and interval <= prev.interval:
        raise ValueError(f"interval {interval} does not follow interval {prev.interval}")
    return Block(
        height=0 if prev is None else prev.height + 1,
        interval=interval,
        status=status,
        prev_hash=genesis if prev is None else prev.digest(),
        content=content,
    )


def sign_block(block: Block, key: Ed25519PrivateKey) -> str:
    return sign_record(_BLOCK_KIND, {"hash": block.digest()}, key)


def quorum_record(commitments: Sequence[SignedEnvelope]) -> dict[str, Any]:
    """The quorum's signed commitments as a block keeps them: the fields all bodies share once
    (the interval, bid set and result; the bid digests, 67 bytes per bid, are most of each
    body), then each signer's signature and the fields only its body has. A hundred-member
    quorum takes about 20 KB a block this way instead of over 600 KB."""
    bodies = [c.body for c in commitments]
    common = {key: value for key, value in bodies[0].items()
              if all(b.get(key, _MISSING) == value for b in bodies)} if bodies else {}
    return {
        "common": common,
        "signed": [
            {"signer": c.signer, "sig": c.sig,
             "body": {key: value for key, value in c.body.items() if key not in common}}
            for c in sorted(commitments, key=lambda c: str(c.body.get("node")))
        ],
    }


def quorum_envelopes(record: object) -> list[SignedEnvelope]:
    """The commitments :func:`quorum_record` kept, as their signers sent them; ``ValueError``
    if the record is not one."""
    if not isinstance(record, dict) or set(record) != {"common", "signed"}:
        raise ValueError("not a quorum record")
    common, signed = record["common"], record["signed"]
    if not isinstance(common, dict) or not isinstance(signed, list):
        raise ValueError("not a quorum record")
    try:
        return [SignedEnvelope(kind="commit", body={**common, **entry["body"]},
                               signer=entry["signer"], sig=entry["sig"]) for entry in signed]
    except (TypeError, KeyError, ValidationError) as exc:
        raise ValueError(f"not a quorum record: {exc}") from None


# --- checking a ledger ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredBlock:
    """One row as the file holds it: the columns, the block's JSON and its signature."""

    height: int
    interval: int
    hash: str
    text: str
    sig: str


@dataclass(frozen=True, slots=True)
class Check:
    """One check of a ledger: whether it could be made, what it covered, what it found."""

    name: str
    made: bool
    summary: str
    problems: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return bool(self.problems)


@dataclass(frozen=True, slots=True)
class Expected:
    """What the ledger must say about itself, from the verifier's own config (None: unknown)."""

    node: str | None = None
    public_key: str | None = None
    authority_key: str | None = None
    community: str | None = None


@dataclass(frozen=True, slots=True)
class LedgerView:
    """A ledger whose header and blocks parsed: what :func:`compare` reads."""

    node: str
    public_key: str
    authority_key: str
    blocks: tuple[Block, ...]


def audit(
    header_text: str, header_sig: str, rows: Iterable[StoredBlock], *,
    certificates: Iterable[str] = (), expected: Expected = Expected(),
) -> tuple[list[Check], LedgerView | None]:
    """Every check one ledger file allows, in order, and the parsed ledger (None when its header
    is unusable: nothing after it can be checked then). ``certificates`` are the quorum members'
    certificates the file keeps, as JSON envelopes."""
    header_check, header = _header(header_text, header_sig)
    if header is None:
        return [header_check], None
    member = header.member()
    genesis = header_digest(header, header_sig)
    chain: list[str] = []
    signatures: list[str] = []
    blocks: list[Block] = []
    prev: Block | None = None
    count = 0
    for row in rows:
        count += 1
        try:
            block = Block.model_validate_json(row.text)
        except ValidationError as exc:
            chain.append(f"block at height {row.height}: not a block ({_first_error(exc)})")
            continue
        chain += _links(block, row, prev, genesis, expected_height=count - 1)
        problem = verify_record(_BLOCK_KIND, {"hash": block.digest()}, signer=member.public_key,
                                sig=row.sig)
        if problem is not None:
            signatures.append(f"block {block.height} (interval {block.interval}): not signed by "
                              f"the node's key ({problem})")
        blocks.append(block)
        prev = block
    span = (f"intervals {blocks[0].interval}..{blocks[-1].interval}" if blocks
            else "no blocks")
    checks = [
        header_check,
        _binding(member, header, expected),
        Check("chain", True, f"{count} blocks ({span}) chained from the header by hash",
              tuple(chain)),
        Check("signatures", True, f"{count} blocks signed by the node's key", tuple(signatures)),
        _quorums(blocks, member, _certified(certificates, member,
                                            authority=header.certificate.signer)),
        _settlements(blocks, member),
    ]
    return checks, LedgerView(node=member.node, public_key=member.public_key,
                              authority_key=header.certificate.signer, blocks=tuple(blocks))


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{'.'.join(map(str, first['loc'])) or 'root'}: {first['msg']}"


def _header(text: str, sig: str) -> tuple[Check, LedgerHeader | None]:
    try:
        header = LedgerHeader.model_validate_json(text)
        member = header.member()
    except ValidationError as exc:
        return Check("header", True, "the header", (f"header: unreadable ({_first_error(exc)})",)
                     ), None
    authority = header.certificate.signer
    checked = verify(header.certificate, expected_kind="cert")
    if isinstance(checked, Rejected):
        return Check("header", True, "the header", (
            f"header: the node's certificate does not verify ({checked.reason})",)), None
    problem = verify_record(_HEADER_KIND, header.model_dump(), signer=member.public_key, sig=sig)
    if problem is not None:
        return Check("header", True, "the header", (
            f"header: not signed by the key its certificate names ({problem}): the header was "
            "edited or made for another key",)), None
    return Check("header", True, f"header signed by node {member.node} (key "
                 f"{member.public_key[:16]}...), certificate signed by authority "
                 f"{authority[:16]}... for community {member.community}"), header


def _binding(member: MembershipCertificate, header: LedgerHeader, expected: Expected) -> Check:
    wanted = {"node": (expected.node, member.node),
              "key": (expected.public_key, member.public_key),
              "community": (expected.community, member.community),
              "authority": (expected.authority_key, header.certificate.signer)}
    known = {name: pair for name, pair in wanted.items() if pair[0] is not None}
    if not known:
        return Check("binding", False, "the ledger's node was not compared with the verifier's "
                     "(give --config, or --node and --public-key)")
    problems = tuple(
        f"the ledger belongs to {name} {got}, not {want}: another ledger was put in its place"
        for name, (want, got) in known.items() if want != got)
    return Check("binding", True, f"the ledger's {', '.join(known)} compared with the "
                 "verifier's", problems)


def _links(block: Block, row: StoredBlock, prev: Block | None, genesis: str, *,
           expected_height: int) -> list[str]:
    found: list[str] = []
    expected_prev = genesis if prev is None else prev.digest()
    if block.height != expected_height:
        found.append(f"block {block.height}: expected height {expected_height} (a block is "
                     "missing or out of place)")
    if (row.height, row.interval) != (block.height, block.interval):
        found.append(f"block {block.height}: its row is filed as height {row.height}, interval "
                     f"{row.interval}")
    if block.prev_hash != expected_prev:
        found.append(f"block {block.height}: prev_hash does not match "
                     + ("the header" if prev is None else "the block before it"))
    if block.digest() != row.hash:
        found.append(f"block {block.height}: content does not match its stored hash")
    if prev is not None and block.interval <= prev.interval:
        found.append(f"block {block.height}: interval {block.interval} out of order")
    return found


def _certified(texts: Iterable[str], member: MembershipCertificate, *, authority: str
               ) -> tuple[set[tuple[str, str]], list[str]]:
    """The (node, key) pairs the community authority certified, from the certificates a ledger
    keeps (its own node's from the header), and what is wrong with any of them. Validity times
    are not checked: a block does not say when its interval was."""
    certified = {(member.node, member.public_key)}
    problems: list[str] = []
    for text in texts:
        try:
            envelope = SignedEnvelope.model_validate_json(text)
        except ValidationError:
            problems.append("a kept certificate is not a signed message")
            continue
        checked = verify(envelope, expected_kind="cert")
        if isinstance(checked, Rejected) or envelope.signer != authority:
            reason = checked.reason if isinstance(checked, Rejected) else "not-authority"
            problems.append(f"a kept certificate does not verify against the authority ({reason})")
            continue
        cert = checked.body
        assert isinstance(cert, MembershipCertificate)  # by expected_kind
        weak = key_problem(cert.public_key)
        if cert.community != member.community or weak is not None:
            problems.append(f"{cert.node}'s kept certificate is not for this community's member "
                            f"keys ({weak or cert.community})")
            continue
        certified.add((cert.node, cert.public_key))
    return certified, problems


def _quorums(blocks: Sequence[Block], member: MembershipCertificate,
             certified: tuple[set[tuple[str, str]], list[str]]) -> Check:
    """Each agreed block's result is backed by the signed commitments of the members it names,
    each signed with a key the community authority certified for that member."""
    members, problems = certified[0], list(certified[1])
    agreed = signatures = 0
    for block in blocks:
        if block.status != "agreed":
            continue
        agreed += 1
        where = f"block {block.height} (interval {block.interval})"
        content = block.content
        try:
            envelopes = quorum_envelopes(content.get("quorum"))
        except ValueError:
            problems.append(f"{where}: agreed without the quorum's signed commitments")
            continue
        signers: set[str] = set()
        for envelope in envelopes:
            checked = verify(envelope, expected_kind="commit")
            if isinstance(checked, Rejected):
                problems.append(f"{where}: a commitment does not verify ({checked.reason})")
                continue
            body = checked.body
            assert isinstance(body, Commitment)  # by expected_kind
            if ((body.community, body.interval, body.result_hash, body.bid_set_digest)
                    != (member.community, block.interval, content.get("result_hash"),
                        content.get("bid_set_digest"))):
                problems.append(f"{where}: {body.node}'s commitment is to another result than "
                                "the block's")
            elif body.node == member.node and envelope.signer != member.public_key:
                problems.append(f"{where}: the node's own commitment is signed by another key")
            elif (body.node, envelope.signer) not in members:
                problems.append(f"{where}: {body.node}'s commitment is signed by a key no "
                                f"certificate in the ledger gives {body.node}")
            else:
                signers.add(body.node)
                signatures += 1
        named = content.get("committed_by")
        if not isinstance(named, list) or set(named) != signers or len(envelopes) != len(named):
            problems.append(f"{where}: committed_by {named} is not the set of members whose "
                            f"signed commitments it carries ({sorted(signers)})")
    return Check("quorum", True, f"{agreed} agreed blocks, {signatures} signed commitments to "
                 f"their results by certified members ({len(members)} certified keys kept)",
                 tuple(problems))


def _settlements(blocks: Sequence[Block], member: MembershipCertificate) -> Check:
    """The node's signed settlement matches its block; the peers' ones carry valid signatures."""
    problems: list[str] = []
    own = peers = 0
    for block in blocks:
        where = f"block {block.height} (interval {block.interval})"
        settlement = block.content.get("settlement")
        if settlement is not None:
            body = _signed_settlement(settlement)
            if isinstance(body, str):
                problems.append(f"{where}: the node's settlement {body}")
            elif (body.node, body.interval) != (member.node, block.interval) or (
                    SignedEnvelope.model_validate(settlement).signer != member.public_key):
                problems.append(f"{where}: the settlement is not the node's own for this interval")
            elif any(getattr(body, f) != (block.content.get("outcome") or {}).get(f)
                     for f in _FIGURES):
                problems.append(f"{where}: the outcome's figures differ from the signed "
                                "settlement's")
            else:
                own += 1
        for peer in block.content.get("peer_settlements") or []:
            body = _signed_settlement(peer)
            if isinstance(body, str):
                problems.append(f"{where}: a peer's settlement {body}")
            else:
                peers += 1
    return Check("settlements", True, f"{own} of the node's signed settlements match their "
                 f"blocks; {peers} peers' settlements carry valid signatures", tuple(problems))


def _signed_settlement(data: object) -> Settlement | str:
    """The settlement a stored envelope carries, or what is wrong with it."""
    try:
        envelope = SignedEnvelope.model_validate(data)
    except ValidationError:
        return "is not a signed message"
    checked = verify(envelope, expected_kind="settle")
    if isinstance(checked, Rejected):
        return f"does not verify ({checked.reason})"
    assert isinstance(checked.body, Settlement)
    return checked.body


# --- a second witness ---------------------------------------------------------------------------


def compare(view: LedgerView, witness: LedgerView, *, name: str) -> Check:
    """Check a ledger against a neighbour's (``witness``, already audited by the caller).

    The neighbour keeps this node's signed settlements as they were published; each one must be
    in this ledger, unchanged, and none may come after its last block: a settlement is signed
    only once its interval's block is written (``gateway/closing.py``), so a witnessed
    settlement past the last block means blocks were cut off. Every interval both agreed must
    have the same result, and every commitment this ledger holds from the neighbour must be
    signed with the neighbour's certified key (no invented quorum). Only intervals this node
    settled with its meter's signed reading are witnessed: abstained or locally settled ones
    leave no trace at a neighbour.
    """
    if witness.node == view.node:
        return Check(f"witness {name}", False,
                     f"{name} is a ledger of the same node, no second witness")
    if witness.authority_key != view.authority_key:
        return Check(f"witness {name}", False,
                     f"{name} is a ledger of another community (authority "
                     f"{witness.authority_key[:16]}...)")
    mine: dict[int, Block] = {b.interval: b for b in view.blocks}
    theirs: dict[int, dict[str, Any]] = {}
    for block in witness.blocks:
        for data in block.content.get("peer_settlements") or []:
            body = _signed_settlement(data)
            if (not isinstance(body, str) and body.node == view.node
                    and data.get("signer") == view.public_key):
                theirs[body.interval] = data
    problems: list[str] = []
    last = view.blocks[-1].interval if view.blocks else None
    beyond = sorted(k for k in theirs if last is None or k > last)
    if beyond:
        problems.append(
            f"tail cut off: {name} holds this node's signed settlements of intervals "
            f"{_span(beyond)}, after the ledger's "
            + ("end (it has no blocks)" if last is None else f"last block (interval {last})"))
    for k in sorted(set(theirs) - set(beyond)):
        held = mine.get(k)
        if held is None:
            problems.append(f"interval {k}: no block, but {name} holds this node's signed "
                            "settlement of it")
        elif held.content.get("settlement") != theirs[k]:
            problems.append(f"interval {k}: the block's settlement differs from the one this "
                            f"node signed and {name} holds")
    for block in view.blocks:
        if block.status != "agreed":
            continue
        with contextlib.suppress(ValueError):  # a missing record is the quorum check's
            if any(c.body.get("node") == witness.node and c.signer != witness.public_key
                   for c in quorum_envelopes(block.content.get("quorum"))):
                problems.append(f"interval {block.interval}: the commitment in {witness.node}'s "
                                f"name is not signed by {witness.node}'s key")
    agreed_both = 0
    for block in witness.blocks:
        held = mine.get(block.interval)
        if held is None or held.status != "agreed" or block.status != "agreed":
            continue
        agreed_both += 1
        if held.content.get("result_hash") != block.content.get("result_hash"):
            problems.append(f"interval {block.interval}: the agreed result differs from "
                            f"{name}'s")
    latest = f", the latest of interval {max(theirs)}" if theirs else ""
    return Check(f"witness {name}", True,
                 f"{len(theirs)} of this node's signed settlements held by {name}{latest}; "
                 f"{agreed_both} agreed results compared", tuple(problems))


def _span(intervals: Sequence[int]) -> str:
    return str(intervals[0]) if len(intervals) == 1 else f"{intervals[0]}..{intervals[-1]}"
