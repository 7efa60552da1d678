"""Membership: certificates against the authority key, expiry and revocation decided at lookup."""

from __future__ import annotations

from protocols.market.roster import Member, Roster
from protocols.messages import Revocation
from protocols.signing import Rejected, generate_key, public_key_hex, sign
from tests.market.community import COMMUNITY, Community, now_ms


def test_certificate_admits_key_until_revoked() -> None:
    community = Community()
    roster = Roster(community=COMMUNITY, authority_key_hex=community.authority_hex)
    key = generate_key()
    cert = community.certificate("alice", key)
    assert isinstance(roster.offer(cert, node="alice", now_ms=now_ms()), Member)
    signer = public_key_hex(key)
    assert isinstance(roster.check(node="alice", signer=signer, now_ms=now_ms()), Member)
    assert roster.check(node="alice", signer=public_key_hex(generate_key()),
                        now_ms=now_ms()) == Rejected("unknown-key")
    assert roster.check(node="bob", signer=signer, now_ms=now_ms()) == Rejected("unknown-key")

    at = now_ms() + 1_000
    revocation = Revocation(community=COMMUNITY, node="alice", public_key=signer,
                            revoked_at_ms=at)
    forged = sign("revoke", revocation, generate_key())
    assert roster.offer(forged, node="alice", now_ms=now_ms()) == Rejected("not-authority")
    real = sign("revoke", revocation, community.authority)
    assert roster.offer(real, node="alice", now_ms=now_ms()) == revocation
    assert isinstance(roster.check(node="alice", signer=signer, now_ms=at - 1), Member)
    assert roster.check(node="alice", signer=signer, now_ms=at) == Rejected("revoked")
    assert roster.active(at) == {}


def test_certificates_from_others_or_for_other_topics_are_refused() -> None:
    community, impostor = Community(), Community()
    roster = Roster(community=COMMUNITY, authority_key_hex=community.authority_hex)
    key = generate_key()
    assert roster.offer(impostor.certificate("alice", key), node="alice",
                        now_ms=now_ms()) == Rejected("not-authority")
    assert roster.offer(community.certificate("alice", key), node="bob",
                        now_ms=now_ms()) == Rejected("node-mismatch")
    late = community.certificate("alice", key, valid_until_ms=now_ms() + 500)
    assert isinstance(roster.offer(late, node="alice", now_ms=now_ms()), Member)
    assert roster.check(node="alice", signer=public_key_hex(key),
                        now_ms=now_ms() + 500) == Rejected("expired")
