"""The header parsers that face a hostile client: Host, Origin, Cookie, the typed token and the
session cookie. None of them raises, whatever the text, and each accepts only what it should."""

import ipaddress
import string

from hypothesis import given
from hypothesis import strategies as st

from gateway.dashboard.origin import HostPolicy, parse_authority
from gateway.dashboard.pairing import (
    OwnerCredential,
    cookie_value,
    format_token,
    parse_token,
)

POLICY = HostPolicy(names=frozenset({"localhost", "gridpi", "gridpi.local", "solar.home.arpa"}))
labels = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=12)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
ports = st.one_of(st.none(), st.integers(1, 65535))
header_text = st.text(st.characters(max_codepoint=0x24F), max_size=80)


def is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def host_header(name: str, port: int | None) -> str:
    return name if port is None else f"{name}:{port}"


@given(header_text, st.one_of(st.none(), header_text))
def test_no_header_value_makes_the_checks_raise(host, origin):
    parse_authority(host)
    refusal = POLICY.check(host, origin)
    assert refusal is None or 400 <= refusal.status < 500


@given(names, ports)
def test_a_name_that_is_not_the_gateways_is_refused_whatever_the_port(name, port):
    refusal = POLICY.check(host_header(name, port), None)
    if name in POLICY.names or is_address(name):
        assert refusal is None
    else:
        assert refusal is not None and (refusal.reason, refusal.status) == ("foreign-host", 421)


@given(st.sampled_from(sorted(POLICY.names)), ports)
def test_the_gateways_own_names_and_its_own_origin_are_served(name, port):
    host = host_header(name.upper(), port)  # names are case-insensitive
    assert POLICY.check(host, None) is None
    assert POLICY.check(host, f"http://{host}") is None
    refusal = POLICY.check(host, f"http://{name}:{(port or 80) % 65535 + 1}")
    assert refusal is not None and refusal.reason == "foreign-origin"


@given(st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda a: f"[{a}]")),
       ports)
def test_literal_addresses_are_served_as_they_cannot_be_rebound(address, port):
    assert POLICY.check(host_header(address, port), None) is None


def test_lookalikes_and_malformed_hosts_are_refused():
    for host in ("gridpi.local.attacker.example", "192.168.1.5.nip.io", "localhost.evil",
                 "gridpi:99999", "gridpi:", "[::1", "::1", "gridpi:80:80", "grid pi", ""):
        assert POLICY.check(host, None) is not None, host
    assert POLICY.check(None, None).reason == "missing-host"


@given(st.binary(min_size=16, max_size=16))
def test_a_token_reads_back_however_the_owner_types_it(raw):
    shown = format_token(raw)
    assert parse_token(shown) == raw
    assert parse_token(shown.lower().replace("-", " ")) == raw
    assert parse_token(shown.replace("O", "0").replace("I", "1")) == raw
    # one spelling per token: the last letter's unused bits must be zero
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".index(shown[-1])
    for other in range(last + 1, last + 4):
        assert parse_token(shown[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[other % 32]) != raw


@given(st.text(max_size=60))
def test_only_the_paired_token_logs_in(typed):
    credential, token = OwnerCredential.new()
    parse_token(typed)
    assert credential.token_matches(typed) == (parse_token(typed) == parse_token(token))
    assert credential.token_matches(token)


@given(st.text(max_size=200), st.floats(0, 4e9))
def test_no_cookie_a_client_makes_up_is_a_session(value, now_s):
    credential, _ = OwnerCredential.new()
    cookie_value(value)
    assert not credential.session_valid(value, now_s=now_s)
    session = credential.new_session(now_s=now_s)
    assert credential.session_valid(session, now_s=now_s)
    assert cookie_value(f"a=b; gridpeer_session={session}; c=d") == session
    assert not OwnerCredential.new()[0].session_valid(session, now_s=now_s)  # another pairing
