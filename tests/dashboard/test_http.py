"""The dashboard's HTTP server against a real gateway of a simulated home, with a raw socket client.

Everything goes over a real socket on 127.0.0.1 so the h11 framing, the limits and the JSON errors
are what a browser or curl would see.
"""

import asyncio
import json

from gateway.dashboard import Dashboard, HttpLimits
from sim_devices.demo.community import provisioned_node
from tests.dashboard.community import (
    exchange,
    http,
    login,
    next_response,
    pair,
    parse_response,
)

GOOD = {"min_sell_price": 150, "max_buy_price": 260, "reserve_pct": 35.0, "ev_ready_by": "07:30"}


async def test_status_is_the_node_snapshot_plus_flows_and_earnings(home):
    async with Dashboard(node=home, port=0) as d:
        status, headers, body = await http(d.url, "GET", "/api/status")
    assert status == 200 and headers["content-type"] == "application/json"
    data = json.loads(body)
    assert data["node"] == "home-1"
    assert set(data["devices"]) == {"meter", "battery", "pv"}
    assert data["earnings"]["today"] == -data["money_today"]
    flows = data["flows"]
    assert flows["grid_w"] == data["meter"]["power_w"]
    assert flows["battery_w"] == data["battery"]["power_w"]
    assert flows["pv_w"] > 0  # 10:00 on a sunny roof
    assert flows["home_w"] == flows["grid_w"] - flows["battery_w"] + flows["pv_w"]


async def test_page_and_its_assets_are_served_from_the_gateway_only(home):
    async with Dashboard(node=home, port=0) as d:
        status, headers, page = await http(d.url, "GET", "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in headers["content-security-policy"]
        for asset, kind in (("/static/app.js", "text/javascript"),
                            ("/static/style.css", "text/css")):
            assert asset.encode() in page
            status, headers, body = await http(d.url, "GET", asset)
            assert status == 200 and headers["content-type"].startswith(kind) and body
    assert b"http://" not in page and b"https://" not in page  # no CDN, works offline


async def test_preferences_are_validated_applied_and_survive_a_restart(home, tmp_path):
    async with Dashboard(node=home, port=0) as d:
        status, _, body = await http(d.url, "GET", "/api/preferences")
        assert status == 200
        assert json.loads(body) == {"min_sell_price": 120, "max_buy_price": 250,
                                    "reserve_pct": 20.0, "ev_ready_by": None}
        cookie = await login(d.url, pair(home))
        status, _, body = await http(d.url, "PUT", "/api/preferences", body=json.dumps(GOOD)
                                     .encode(), headers={"content-type": "application/json",
                                                         "cookie": cookie})
        assert status == 200, body
        assert json.loads(body) == GOOD
    # the bids use them from now on
    assert (home.prefs.min_sell_price, home.prefs.max_buy_price) == (150, 260)
    assert home.prefs.reserve_pct == 35.0
    saved = home.config.state_dir / "preferences.json"
    assert json.loads(saved.read_text()) == GOOD

    # a restarted gateway (fresh node from the same config) gets them back through the dashboard
    again = provisioned_node(tmp_path / "home-1" / "gridpeer.toml", clock=home.clock)
    assert again.prefs.min_sell_price == 120
    async with Dashboard(node=again, port=0) as d:
        _, _, body = await http(d.url, "GET", "/api/preferences")
    assert json.loads(body) == GOOD
    assert (again.prefs.min_sell_price, again.prefs.reserve_pct) == (150, 35.0)


async def test_bad_preferences_get_a_4xx_naming_the_field_and_change_nothing(home):
    bad = [
        ({**GOOD, "reserve_pct": 101}, 422, "reserve_pct"),
        ({**GOOD, "min_sell_price": -1}, 422, "min_sell_price"),
        ({**GOOD, "max_buy_price": "250"}, 422, "max_buy_price"),
        ({**GOOD, "max_buy_price": 12.5}, 422, "max_buy_price"),
        ({**GOOD, "ev_ready_by": "24:00"}, 422, "ev_ready_by"),
        ({**GOOD, "ev_ready_by": "7:30"}, 422, "ev_ready_by"),
        ({**GOOD, "colour": "green"}, 422, "colour"),
        # V2G consent is the owner's file only: a page on the LAN cannot drain the car to 0 %
        ({**GOOD, "v2g_min_soc_pct": 0}, 422, "v2g_min_soc_pct"),
        ({k: v for k, v in GOOD.items() if k != "reserve_pct"}, 422, "reserve_pct"),
    ]
    async with Dashboard(node=home, port=0) as d:
        json_headers = {"content-type": "application/json",
                        "cookie": await login(d.url, pair(home))}
        for body, code, field in bad:
            status, _, answer = await http(d.url, "PUT", "/api/preferences",
                                           body=json.dumps(body).encode(), headers=json_headers)
            error = json.loads(answer)
            assert status == code, (body, error)
            assert [f["field"] for f in error["fields"]] == [field], (body, error)
        status, _, answer = await http(d.url, "PUT", "/api/preferences", body=b"{not json",
                                       headers=json_headers)
        assert status == 400 and json.loads(answer)["error"] == "body is not valid JSON"
        status, _, answer = await http(d.url, "PUT", "/api/preferences",
                                       body=json.dumps(GOOD).encode(),
                                       headers={**json_headers, "content-type": "text/plain"})
        assert status == 415 and "application/json" in json.loads(answer)["error"]
        _, _, current = await http(d.url, "GET", "/api/preferences")
    assert json.loads(current)["min_sell_price"] == 120
    assert home.prefs.min_sell_price == 120
    assert not (home.config.state_dir / "preferences.json").exists()


async def test_unknown_paths_and_methods_get_json_errors(home):
    async with Dashboard(node=home, port=0) as d:
        status, _, body = await http(d.url, "GET", "/nope?x=1")
        assert status == 404 and json.loads(body) == {"error": "not found", "path": "/nope"}
        status, headers, body = await http(d.url, "DELETE", "/api/preferences")
        assert status == 405 and headers["allow"] == "GET, PUT"
        assert json.loads(body)["allow"] == ["GET", "PUT"]
        status, _, _ = await http(d.url, "POST", "/api/status")
        assert status == 405


async def test_limits_on_body_size_header_count_and_header_bytes(home):
    limits = HttpLimits(max_body_bytes=1000, max_headers=20, max_header_bytes=4096)
    async with Dashboard(node=home, port=0, limits=limits) as d:
        status, _, body = await http(d.url, "PUT", "/api/preferences", body=b" " * 1001,
                                     headers={"content-type": "application/json"})
        assert status == 413 and json.loads(body)["limit"] == 1000
        # a chunked body gives no length up front: it is cut off once it passes the limit
        chunked = (b"PUT /api/preferences HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
                   b"content-type: application/json\r\n\r\n" + b"200\r\n" + b" " * 512 + b"\r\n"
                   ) + (b"200\r\n" + b" " * 512 + b"\r\n") * 3
        status, _, _ = parse_response(await exchange(d.url, chunked))
        assert status == 413
        many = {f"x-h{i}": "1" for i in range(21)}
        status, _, body = await http(d.url, "GET", "/api/status", headers=many)
        assert status == 431 and json.loads(body)["error"] == "too many headers"
        status, _, body = await http(d.url, "GET", "/api/status", headers={"x-big": "a" * 5000})
        assert status == 431 and "too large" in json.loads(body)["error"]
        # a header block that never ends is refused once it passes the limit (h11's bound)
        status, _, body = parse_response(
            await exchange(d.url, b"GET / HTTP/1.1\r\nx-big: " + b"a" * 5000))
        assert status == 431 and "too large" in json.loads(body)["error"]
        status, _, body = parse_response(await exchange(d.url, b"NOT HTTP AT ALL\r\n\r\n"))
        assert status == 400 and json.loads(body)["error"].startswith("malformed request")


async def test_keep_alive_serves_several_requests_on_one_connection(home):
    async with Dashboard(node=home, port=0) as d:
        reader, writer = await asyncio.open_connection("127.0.0.1", d.port)
        try:
            for path in ("/api/status", "/api/preferences", "/metrics"):
                writer.write(f"GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n".encode())
                assert (await next_response(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
        finally:
            writer.close()
            await writer.wait_closed()


async def test_idle_connections_are_closed_and_extra_ones_refused(home):
    async with Dashboard(node=home, port=0,
                         limits=HttpLimits(max_connections=1, request_timeout_s=0.5)) as d:
        reader, writer = await asyncio.open_connection("127.0.0.1", d.port)
        try:
            await asyncio.sleep(0.1)  # the first connection holds the only slot, saying nothing
            status, _, body = await http(d.url, "GET", "/api/status")
            assert status == 503 and json.loads(body)["error"] == "too many connections"
            async with asyncio.timeout(5):
                assert await reader.read() == b""  # closed for idling, without an answer
        finally:
            writer.close()
            await writer.wait_closed()
        status, _, _ = await http(d.url, "GET", "/api/status")
        assert status == 200


async def test_a_client_asking_faster_than_its_budget_waits_and_is_never_refused(home):
    limits = HttpLimits(requests_per_s_per_client=40)  # a burst of 80, then 40 a second
    async with Dashboard(node=home, port=0, limits=limits) as d:
        reader, writer = await asyncio.open_connection("127.0.0.1", d.port)
        try:
            for _ in range(120):
                writer.write(b"GET /api/status HTTP/1.1\r\nhost: localhost\r\n\r\n")
                assert (await next_response(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
        finally:
            writer.close()
            await writer.wait_closed()
        assert not d.app.refusals.counts
