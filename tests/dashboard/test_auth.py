"""Who may change a gateway's preferences: the owner's session, on the gateway's own names only.

Over real sockets against a real gateway of the demo community, with the requests a hostile page
(DNS rebinding, a cross-site form) or a host on the LAN (no token, wrong tokens) would send. Each
refusal has its status code and its counted reason in ``/metrics``.
"""

import json
import os
import re

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.cli import main
from gateway.dashboard import Dashboard
from gateway.dashboard.pairing import CREDENTIAL_FILE, SESSION_S
from gateway.dashboard.ratelimit import ClientBudget
from protocols.signing import public_key_hex
from tests.dashboard.community import http, login, pair, try_login

JSON = {"content-type": "application/json"}
# what the audit's rebinding page set: no reserve, prices at the extremes
EXTREME = json.dumps({"min_sell_price": 0, "max_buy_price": 100_000, "reserve_pct": 0.0,
                      "ev_ready_by": None}).encode()
DEFAULT = {"min_sell_price": 120, "max_buy_price": 250, "reserve_pct": 20.0, "ev_ready_by": None}


async def refusals(url: str) -> dict[str, int]:
    """The dashboard's refusal counts, as Prometheus reads them."""
    status, _, body = await http(url, "GET", "/metrics")
    assert status == 200
    return {m[1]: int(m[2]) for m in re.finditer(
        r'^gridpeer_dashboard_refusals_total\{node="[^"]*",reason="([^"]+)"\} (\d+)$',
        body.decode(), re.MULTILINE)}


async def preferences_unchanged(url: str, home) -> None:
    _, _, body = await http(url, "GET", "/api/preferences")
    assert json.loads(body) == DEFAULT
    assert home.prefs.reserve_pct == 20 and home.prefs.min_sell_price == 120
    assert not (home.config.state_dir / "preferences.json").exists()


async def test_the_dns_rebinding_request_is_refused_and_changes_nothing(home):
    """The audit's request: a page whose own name now points at the gateway. Refused (421) on
    its Host alone, even if it held a valid session; reading the status that way fails too."""
    rebind = {"host": "rebind.attacker.example:8080",
              "origin": "http://rebind.attacker.example:8080"}
    async with Dashboard(node=home, port=0) as d:
        cookie = await login(d.url, pair(home))
        status, _, body = await http(d.url, "PUT", "/api/preferences", body=EXTREME,
                                     headers={**JSON, **rebind, "cookie": cookie})
        assert status == 421, body
        assert "rebind.attacker.example" in json.loads(body)["error"]
        status, _, _ = await http(d.url, "GET", "/api/status", headers=rebind)
        assert status == 421
        await preferences_unchanged(d.url, home)
        assert (await refusals(d.url))["foreign-host"] == 2


async def test_a_cross_site_origin_is_refused_with_403(home):
    """The gateway's own Host, but the request comes from another site's page (a form or a
    fetch): refused, whatever cookie it carries."""
    async with Dashboard(node=home, port=0) as d:
        cookie = await login(d.url, pair(home))
        for origin in ("http://evil.example", "null", f"http://localhost:{d.port + 1}"):
            status, _, body = await http(d.url, "PUT", "/api/preferences", body=EXTREME,
                                         headers={**JSON, "origin": origin, "cookie": cookie})
            assert status == 403, (origin, body)
        status, _, _ = await http(d.url, "POST", "/api/login", body=b'{"token": "x"}',
                                  headers={**JSON, "origin": "http://evil.example"})
        assert status == 403
        await preferences_unchanged(d.url, home)
        assert (await refusals(d.url))["foreign-origin"] == 4
        # the page's own origin, as the browser sends it on a same-origin PUT, is fine
        status, _, body = await http(d.url, "PUT", "/api/preferences", body=EXTREME,
                                     headers={**JSON, "origin": f"http://127.0.0.1:{d.port}",
                                              "cookie": cookie})
        assert status == 200, body


async def test_changing_preferences_needs_the_owners_session(home):
    async with Dashboard(node=home, port=0) as d:
        status, _, body = await http(d.url, "PUT", "/api/preferences", body=EXTREME,
                                     headers=JSON)
        assert status == 401 and "gridpeer dashboard pair" in json.loads(body)["error"]
        token = pair(home)
        status, _, _ = await http(d.url, "PUT", "/api/preferences", body=EXTREME, headers=JSON)
        assert status == 401
        forged = {"cookie": "gridpeer_session=9999999999.00ff"}
        status, _, _ = await http(d.url, "PUT", "/api/preferences", body=EXTREME,
                                  headers={**JSON, **forged})
        assert status == 401
        await preferences_unchanged(d.url, home)
        assert await refusals(d.url) == {"not-paired": 1, "no-session": 1, "bad-session": 1}
        # reading stays open on the gateway's own names
        for path in ("/", "/api/status", "/api/preferences", "/metrics"):
            status, _, _ = await http(d.url, "GET", path)
            assert status == 200, path
        cookie = await login(d.url, token)
        status, _, body = await http(d.url, "PUT", "/api/preferences", body=EXTREME,
                                     headers={**JSON, "cookie": cookie})
        assert status == 200, body
    assert (home.prefs.min_sell_price, home.prefs.max_buy_price) == (0, 100_000)


async def test_wrong_tokens_are_refused_then_rate_limited_per_client(home):
    async with Dashboard(node=home, port=0) as d:
        token = pair(home)
        for guess in ["AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AA", "not a token", "", "x" * 500,
                      ("B" if token[0] == "A" else "A") + token[1:]]:
            status, _, body = await try_login(d.url, guess)
            assert status == 401 and json.loads(body)["error"] == "wrong token", guess
        # the client's attempts are spent: even the right token waits
        status, headers, body = await try_login(d.url, token)
        assert status == 429 and int(headers["retry-after"]) > 0, body
        # another client of the LAN (the owner's phone) is not locked out
        cookie = await login(d.url, token, source="127.0.0.2")
        status, _, _ = await http(d.url, "PUT", "/api/preferences", body=EXTREME,
                                  headers={**JSON, "cookie": cookie})
        assert status == 200
        assert await refusals(d.url) == {"bad-token": 5, "login-rate-limited": 1}


def test_attempts_come_back_one_per_refill_period():
    budget = ClientBudget(burst=3, refill_s=10.0, max_clients=2)
    for _ in range(3):
        assert budget.wait_s("a", now_s=0.0) == 0
        budget.spend("a", now_s=0.0)
    assert budget.wait_s("a", now_s=0.0) == 10.0
    assert budget.wait_s("a", now_s=7.5) == 2.5
    assert budget.wait_s("a", now_s=10.0) == 0
    budget.spend("a", now_s=10.0)
    assert budget.wait_s("a", now_s=10.0) == 10.0
    # a full table never forgets a limited client to make room: it drops the least suspect
    budget.spend("b", now_s=10.0)
    budget.spend("c", now_s=11.0)
    assert budget.wait_s("a", now_s=11.0) == 9.0
    assert budget.wait_s("c", now_s=11.0) == 0


async def test_login_gives_a_strict_httponly_session_and_pairing_again_ends_it(home):
    async with Dashboard(node=home, port=0) as d:
        token = pair(home)
        status, headers, _ = await try_login(d.url, token.lower().replace("-", " "))
        assert status == 200  # typed in lower case with spaces: still the token
        attributes = [part.strip() for part in headers["set-cookie"].split(";")]
        assert attributes[0].startswith("gridpeer_session=")
        assert {"HttpOnly", "SameSite=Strict", "Path=/", f"Max-Age={SESSION_S}"} <= set(
            attributes)
        cookie = attributes[0]
        _, _, body = await http(d.url, "GET", "/api/session", headers={"cookie": cookie})
        assert json.loads(body) == {"paired": True, "owner": True}

        pair(home)  # the owner lost a phone: a new token, and every session ends
        _, _, body = await http(d.url, "GET", "/api/session", headers={"cookie": cookie})
        assert json.loads(body) == {"paired": True, "owner": False}
        status, _, _ = await http(d.url, "PUT", "/api/preferences", body=EXTREME,
                                  headers={**JSON, "cookie": cookie})
        assert status == 401
        status, _, _ = await try_login(d.url, token)
        assert status == 401
        status, headers, _ = await http(d.url, "POST", "/api/logout")
        assert "Max-Age=0" in headers["set-cookie"]


def test_pair_prints_a_token_and_keeps_only_its_hash(tmp_path, capsys):
    config = tmp_path / "gridpeer.toml"
    authority = public_key_hex(Ed25519PrivateKey.generate())
    config.write_text(
        'node = "home-1"\nkey_file = "node.key"\ncertificate_file = "node.cert"\n'
        f'state_dir = "state"\n[market]\ncommunity = "c"\nauthority_key = "{authority}"\n')
    assert main(["dashboard", "pair", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    token = re.search(r"dashboard owner token: ([A-Z2-7-]+)", out)
    assert token is not None and len(token[1].replace("-", "")) == 26  # 128 bits in base32
    stored = tmp_path / "state" / CREDENTIAL_FILE
    assert stored.stat().st_mode & 0o777 == 0o600
    assert token[1] not in stored.read_text() and token[1].replace("-", "") not in (
        stored.read_text())
    assert main(["dashboard", "pair", "--config", str(config)]) == 0
    assert re.search(r"dashboard owner token: ([A-Z2-7-]+)", capsys.readouterr().out)[1] != (
        token[1])
    assert os.stat(stored).st_mode & 0o777 == 0o600
