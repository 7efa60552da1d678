"""What lets the simulator run large communities without changing what a member does: the
members share one parse-and-check per certificate and presence (as per bid), a shared answer is
the one each member would have come to alone, and a scale run may stop with its last traded
interval.
"""

from __future__ import annotations

import gc
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.market import Market, topics
from protocols.market.market import Opener, open_signed
from protocols.market.roster import Member, Roster
from protocols.messages import (
    DEFAULT_MAX_ENVELOPE_BYTES,
    MessageError,
    Presence,
    Revocation,
    SignedEnvelope,
)
from protocols.signing import Rejected, generate_key, public_key_hex, sign
from sim_devices.market_sim import Config, run
from sim_devices.market_sim.opener import SharedOpener
from sim_devices.market_sim.run import PARAMS, TIMING
from tests.market.community import COMMUNITY, Community, now_ms

AUTHORITY = Community()
DAVE = generate_key()


def market(node: str, opener: Opener = open_signed) -> Market:
    return Market(community=COMMUNITY, node=node, identity=(key := generate_key()),
                  certificate=AUTHORITY.certificate(node, key),
                  authority_key_hex=AUTHORITY.authority_hex, timing=TIMING, params=PARAMS,
                  opener=opener)


def test_members_sharing_an_opener_hold_one_certificate_and_presence_checked_once() -> None:
    shared = SharedOpener()
    members = [market(name, shared) for name in ("alice", "bob", "carol")]
    alone = market("erin")
    cert = AUTHORITY.certificate("dave", DAVE).to_bytes()
    dave = Market(community=COMMUNITY, node="dave", identity=DAVE,
                  certificate=SignedEnvelope.from_bytes(cert),
                  authority_key_hex=AUTHORITY.authority_hex, timing=TIMING, params=PARAMS)
    online, _ = dave.presence(1)
    now = now_ms()
    for m in [*members, alone]:
        m.start(now)
        assert m.receive(topics.presence(COMMUNITY, "dave"), online, False, now) == []
        assert m.receive(topics.roster(COMMUNITY, "dave"), cert, True, now) == []
        assert "dave" in m.active(now) and m.certificate("dave") is not None
    held = [m.certificate("dave") for m in members]
    assert held[0] is held[1] is held[2]  # one parse, one signature check, for all three
    assert alone.certificate("dave") is not held[0] and alone.certificate("dave") == held[0]


def _payloads() -> st.SearchStrategy[bytes]:
    """What may arrive on ``roster/dave``: dave's certificate, one by an impostor authority, one
    for another node, a revocation by either, another kind, a signature broken, junk bytes."""
    impostor = Community()
    dave_hex = public_key_hex(DAVE)
    revocation = Revocation(community=COMMUNITY, node="dave", public_key=dave_hex,
                            revoked_at_ms=now_ms() - 1)
    good = AUTHORITY.certificate("dave", DAVE)
    broken = good.model_copy(update={"sig": "0" * 128})
    forged = impostor.certificate("dave", DAVE).model_copy(update={"sig": "0" * 128})
    envelopes = [good, broken, forged, impostor.certificate("dave", DAVE),
                 AUTHORITY.certificate("bob", DAVE),
                 AUTHORITY.certificate("dave", DAVE, valid_until_ms=now_ms() - 1),
                 AUTHORITY.certificate("dave", DAVE, community="elm-street"),
                 sign("revoke", revocation, AUTHORITY.authority),
                 sign("revoke", revocation, impostor.authority),
                 dave_presence()]
    return st.one_of(st.sampled_from([e.to_bytes() for e in envelopes]),
                     st.binary(min_size=1, max_size=64),
                     st.sampled_from([b"{}", b"[]", b'{"kind":1}']))


def dave_presence() -> SignedEnvelope:
    return sign("presence", Presence(community=COMMUNITY, node="dave", session=1,
                                     state="online"), DAVE)


def offered(payload: bytes, now: int) -> list[Rejected]:
    """What the roster answered before the opener took certificates: parse, then offer."""
    try:
        envelope = SignedEnvelope.from_bytes(payload)
    except MessageError as exc:
        return [Rejected(exc.reason)]
    taken = Roster(community=COMMUNITY, authority_key_hex=AUTHORITY.authority_hex).offer(
        envelope, node="dave", now_ms=now)
    return [taken] if isinstance(taken, Rejected) else []


@settings(max_examples=60, deadline=None)
@given(payload=_payloads(), shared_first=st.booleans())
def test_a_roster_message_gets_the_answer_the_roster_alone_gives_shared_or_not(
        payload: bytes, shared_first: bool) -> None:
    now = now_ms()
    shared = SharedOpener()
    if shared_first:  # another member opened it first: the answer comes from the cache
        shared(payload, DEFAULT_MAX_ENVELOPE_BYTES, "cert", AUTHORITY.authority_hex)
    answers = []
    for opener in (shared, open_signed):
        m = market("alice", opener)
        m.start(now)
        answers.append(m.receive(topics.roster(COMMUNITY, "dave"), payload, True, now))
    assert answers[0] == answers[1] == offered(payload, now)


def test_a_certificate_signed_by_another_key_is_refused_before_its_signature_is_checked() -> None:
    """The authority is checked first, as ``check_certificate`` does: a junk certificate costs
    a receiver no signature check."""
    forged = Community().certificate("dave", DAVE).model_copy(update={"sig": "0" * 128})
    payload, size = forged.to_bytes(), DEFAULT_MAX_ENVELOPE_BYTES
    assert open_signed(payload, size, "cert", AUTHORITY.authority_hex) == Rejected("not-authority")
    assert open_signed(payload, size, "cert", None) == Rejected("bad-signature")
    roster = Roster(community=COMMUNITY, authority_key_hex=AUTHORITY.authority_hex)
    assert roster.offer(forged, node="dave", now_ms=now_ms()) == Rejected("not-authority")
    assert isinstance(roster.offer(AUTHORITY.certificate("dave", DAVE), node="dave",
                                   now_ms=now_ms()), Member)


def test_a_scale_run_may_stop_with_its_last_traded_interval_and_counts_messages_by_kind() -> None:
    """``drain=0``: the same messages per interval and agreement times as the full run (it is
    the same run up to there), fewer steps, and every steady interval's message has a kind."""
    calm = Config(members=6, intervals=3, adversaries=False, faults=False)
    full, short = run(5, calm), run(5, replace(calm, drain=0))
    assert full.ok and short.ok
    assert short.per_interval == full.per_interval and short.agree_ms == full.agree_ms
    assert short.steps < full.steps
    assert sum(short.kinds.values()) == sum(short.per_interval) > 0
    assert {"bids", "commit"} <= set(short.kinds)



def test_the_cycle_collector_is_off_while_a_community_runs_and_as_it_was_after() -> None:
    seen: list[bool] = []
    calm = Config(members=40, intervals=1, adversaries=False, faults=False, drain=0)
    assert gc.isenabled()
    report = run(5, calm, lambda scheduler, network: seen.append(gc.isenabled()), every=1_000)
    assert report.ok and seen and not any(seen)
    assert gc.isenabled()
