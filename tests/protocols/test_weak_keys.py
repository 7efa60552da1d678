"""Small-order and non-canonical Ed25519 keys are refused wherever a key enters, with the reason.

With a small-order public key, one forged signature (R = identity, S = 0) verifies for every
message: a certificate naming such a key would let anyone sign bids in that member's name.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from gateway.cli import main
from gateway.config import ConfigError, load_config
from gateway.identity import IdentityError, load_certificate, save_envelope
from gateway.market.peerlink import PeerLink
from protocols.keycheck import SMALL_ORDER_KEYS, key_problem
from protocols.market import Agreed, topics
from protocols.market.roster import Roster
from protocols.messages import Bid, MembershipCertificate, SignedEnvelope
from protocols.signing import (
    Rejected,
    check_certificate,
    generate_key,
    public_key_hex,
    sign,
    signed_bytes,
    verify,
    verify_record,
)
from tests.market.community import COMMUNITY, HOUR_MS, Community, now_ms

_P = 2**255 - 19
IDENTITY = SMALL_ORDER_KEYS[0]  # 01 00..00: y = 1, x = 0
FORGED_SIG = IDENTITY + "00" * 32  # R = identity, S = 0


def _encode(y: int, sign_bit: int) -> str:
    return (y | (sign_bit << 255)).to_bytes(32, "little").hex()


#: Second spellings of small-order points: y >= p (p = 0, p + 1 = 1) and the x-sign bit on x = 0.
NON_CANONICAL_SMALL = (_encode(_P, 0), _encode(_P, 1), _encode(_P + 1, 0), _encode(_P + 1, 1),
                       _encode(1, 1), _encode(_P - 1, 1))
WEAK = [(k, "small-order") for k in SMALL_ORDER_KEYS] + [
    (k, "non-canonical") for k in NON_CANONICAL_SMALL]
weak_keys = st.sampled_from(WEAK)


def _bid(node: str, interval: int, energy_wh: int, price: int) -> Bid:
    return Bid(community=COMMUNITY, interval=interval, node=node, seq=0, side="sell",
               energy_wh=energy_wh, limit_price=price, created_ms=now_ms())


def _cert(public_key: str, *, node: str = "weak") -> MembershipCertificate:
    return MembershipCertificate(
        community=COMMUNITY, node=node, public_key=public_key, bus="b1", import_limit_w=1,
        export_limit_w=1, valid_from_ms=now_ms() - HOUR_MS, valid_until_ms=now_ms() + HOUR_MS)


def test_the_identity_key_forgery_is_real_openssl_accepts_it():
    """What the check guards against: OpenSSL verifies (R = identity, S = 0) under key 01 00..00
    for any message, so a certified small-order key lets anyone sign in its name."""
    message = signed_bytes("bid", _bid("weak", 7, 5000, 1).model_dump(mode="json"))
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(IDENTITY)).verify(
        bytes.fromhex(FORGED_SIG), message)  # raises InvalidSignature if OpenSSL refused it


@given(weak_keys)
def test_every_small_order_or_non_canonical_key_gets_its_reason(weak):
    key, reason = weak
    assert key_problem(key) == reason
    assert key_problem(bytes.fromhex(key)) == reason


@given(st.integers(min_value=_P, max_value=2**255 - 1), st.integers(0, 1))
def test_a_y_coordinate_at_or_above_p_is_non_canonical(y, sign_bit):
    assert key_problem(_encode(y, sign_bit)) == "non-canonical"


def test_generated_keys_pass_and_garbage_gets_a_reason():
    assert all(key_problem(public_key_hex(generate_key())) is None for _ in range(50))
    assert key_problem("ab" * 32) == "not-on-curve"
    assert key_problem("zz" * 32) == key_problem(b"\x01" * 31) == "malformed"


@given(weak_keys, st.integers(0, 2**40), st.integers(0, 1_000_000), st.integers(0, 1_000_000))
def test_a_forged_bid_under_a_weak_key_is_refused_by_verify(weak, interval, energy, price):
    key, reason = weak
    body = _bid("weak", interval, energy, price).model_dump(mode="json")
    forged = SignedEnvelope(kind="bid", body=body, signer=key, sig=FORGED_SIG)
    assert verify(forged) == Rejected(f"bad-key:{reason}")
    assert verify_record("block", {"hash": "0" * 64}, signer=key, sig=FORGED_SIG) == (
        f"bad-key:{reason}")


@given(weak_keys)
def test_a_certificate_for_a_weak_key_is_refused_by_the_check_and_the_roster(weak):
    key, reason = weak
    authority = generate_key()
    envelope = sign("cert", _cert(key), authority)
    assert check_certificate(envelope, public_key_hex(authority), community=COMMUNITY,
                             now_ms=now_ms()) == Rejected(f"bad-key:{reason}")
    roster = Roster(community=COMMUNITY, authority_key_hex=public_key_hex(authority))
    assert roster.offer(envelope, node="weak", now_ms=now_ms()) == Rejected(f"bad-key:{reason}")
    assert roster.check(node="weak", signer=key, now_ms=now_ms()) == Rejected("unknown-key")
    with pytest.raises(ValueError, match=reason):
        Roster(community=COMMUNITY, authority_key_hex=key)


@pytest.mark.parametrize(("key", "reason"), WEAK)
def test_a_certificate_file_for_a_weak_key_is_refused(tmp_path, key, reason):
    path = tmp_path / "node.cert"
    save_envelope(path, sign("cert", _cert(key), generate_key()))
    with pytest.raises(IdentityError, match=f"public key is {reason}"):
        load_certificate(path)


@pytest.mark.parametrize(("key", "reason"), WEAK)
def test_a_config_with_a_weak_authority_key_names_the_key(tmp_path, key, reason):
    path = tmp_path / "gridpeer.toml"
    path.write_text(f'node = "home-1"\nkey_file = "node.key"\ncertificate_file = "node.cert"\n'
                    f'[market]\ncommunity = "{COMMUNITY}"\nauthority_key = "{key}"\n')
    with pytest.raises(ConfigError, match=f"market.authority_key.*{reason}"):
        load_config(path)


def _cli(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = int(exit_.code)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("key", "reason"), WEAK)
def test_the_cli_refuses_a_weak_key_with_its_reason(tmp_path, capsys, key, reason):
    authority = tmp_path / "authority.key"
    assert _cli(capsys, "community", "init", "--key", str(authority))[0] == 0
    code, err = _cli(capsys, "community", "admit", "--key", str(authority), "--community",
                     COMMUNITY, "--node", "home-1", "--public-key", key, "--out",
                     str(tmp_path / "c"))
    assert code == 2 and f"{reason} Ed25519 point" in err and not (tmp_path / "c").exists()
    code, err = _cli(capsys, "init", "--dir", str(tmp_path / "home"), "--authority-key", key)
    assert code == 2 and f"{reason} Ed25519 point" in err
    assert not (tmp_path / "home" / "gridpeer.toml").exists()


def test_init_without_an_authority_key_refuses_and_writes_nothing(tmp_path, capsys):
    code, err = _cli(capsys, "init", "--dir", str(tmp_path))
    assert code == 2 and "--authority-key" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


async def test_a_real_agent_rejects_a_bid_forged_under_a_certified_small_order_key(any_broker):
    """The authority signed a certificate for 01 00..00 (a typo, a hostile request): the
    receiving agent refuses the certificate and the forged bid, and never clears it."""
    community = Community()
    async with AsyncExitStack() as stack:
        mallory = await stack.enter_async_context(
            PeerLink(broker_url=any_broker, community=COMMUNITY, node="weak"))
        await mallory.publish(topics.roster(COMMUNITY, "weak"),
                              sign("cert", _cert(IDENTITY), community.authority).to_bytes(),
                              retain=True)
        (alice,) = await community.agents(stack, any_broker, "alice")
        k = community.next_interval(margin_ms=400)
        await alice.submit_bid(k, "buy", 1_000, 250)  # a buyer the forged offer would serve
        forged = SignedEnvelope(kind="bid", body=_bid("weak", k, 5000, 1).model_dump(mode="json"),
                                signer=IDENTITY, sig=FORGED_SIG)
        await mallory.publish(topics.bid(COMMUNITY, k, "weak"), forged.to_bytes())
        deadline = time.monotonic() + 5
        while alice.rejections["bad-key:small-order"] < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        outcome = await asyncio.wait_for(alice.outcome(k), 10)
    # the certificate (on every delivery of the retained copy), then the bid: never another reason
    assert set(alice.rejections) == {"bad-key:small-order"}
    assert alice.rejections["bad-key:small-order"] >= 2
    assert isinstance(outcome, Agreed) and not outcome.result.trades
