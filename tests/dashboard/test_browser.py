"""The dashboard page in headless Chromium against a real gateway of the demo community.

The page polls the API every second while the community runs at 300x, so the node the dashboard
reads is held still between the test's ``freeze()`` calls (``Frozen``: the real node's status,
taken at one moment). The ledger stays live, so the API is read again at every
check. That makes "the page shows what the API returns" an exact comparison, and "the page
updates" a visible change after the next ``freeze()``. Changing preferences goes the owner's way:
``gridpeer dashboard pair`` prints a token, the token is typed into the page's login form, then the
form is saved. ``GRIDPEER_UPDATE_SCREENSHOT=1`` copies the screenshot to ``docs/dashboard.png``;
otherwise the test leaves the source tree alone.
"""

import asyncio
import importlib.util
import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.dashboard import Dashboard
from gateway.dashboard.app import Request
from gateway.home import GatewayNode, Status
from tests._require import require
from tests.dashboard.community import community

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.realtime  # a community on a scaled clock; the page polls on the wall clock
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"


class Frozen:
    """A real node's status, read at the last ``freeze()``; preferences go to the real node."""

    def __init__(self, node: GatewayNode) -> None:
        self._node = node
        self.config, self.timing, self.ledger = node.config, node.timing, node.ledger
        self.freeze()

    def freeze(self) -> None:
        self._status = self._node.status()

    def status(self) -> Status:
        return self._status

    def update_preferences(self, prefs) -> None:
        self._node.update_preferences(prefs)


def _fixed(value: float, places: int) -> str:
    """JavaScript's ``toFixed``: the exact binary value, rounded half away from zero."""
    return str(Decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def expected_text(kind: str, value: Any) -> str:
    """What app.js's FORMATS show for ``value``."""
    if value is None or value == "":
        return "" if kind == "text" else "—"
    return {
        "text": lambda v: str(v),
        "int": lambda v: str(v),
        "time": lambda v: datetime.fromtimestamp(v / 1000, UTC).strftime("%H:%M") + " UTC",
        "w": lambda v: _fixed(v / 1000, 2) + " kW" if abs(v) >= 1000 else f"{round(v)} W",
        "pct": lambda v: _fixed(v, 1) + " %",
        "wh": lambda v: f"{round(v)} Wh",
        "price": lambda v: _fixed(v / 10, 1) + " c/kWh",
        "money": lambda v: _fixed(v / 1e6, 3) + " €",
        "paid": lambda v: _fixed(-v / 1e6, 3) + " €",
    }[kind](value)


def pick(status: dict[str, Any], path: str) -> Any:
    value: Any = status
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


_READ_DOM = """
return [document.body.dataset.nowMs || null,
        Array.from(document.querySelectorAll('[data-field]'),
                   el => [el.dataset.field, el.dataset.format, el.textContent]),
        document.querySelectorAll('#devices tr').length,
        document.getElementById('link').textContent];
"""

_SUBMIT = """
const form = document.getElementById('prefs');
document.getElementById('prefs-result').textContent = '';
form.elements.reserve_pct.value = arguments[0];
form.querySelector('button').click();
"""
_RESULT = "return document.getElementById('prefs-result').textContent;"
_LOGIN_SHOWN = "return !document.getElementById('login').hidden;"
_CAN_SAVE = "return !document.querySelector('#prefs button[type=submit]').disabled;"


def open_browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with both paths given, Selenium Manager never runs
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={profile}", "--window-size=1200,1250"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def owner_token(config: Path, capsys) -> str:
    """Run ``gridpeer dashboard pair`` as the owner does on the Pi; the token it prints."""
    assert main(["dashboard", "pair", "--config", str(config)]) == 0
    found = re.search(r"dashboard owner token: (\S+)", capsys.readouterr().out)
    assert found is not None
    return found[1]


async def test_page_shows_the_api_values_and_updates(tmp_path, capsys):
    require(shutil.which(CHROMIUM) is not None and shutil.which(CHROMEDRIVER) is not None,
            "headless Chromium: apt-get install -y chromium chromium-driver")
    require(importlib.util.find_spec("selenium") is not None, "pip install selenium")
    from selenium.webdriver.common.by import By

    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=1)  # selenium blocks: keep it off the event loop

    async def call(fn, *args):
        return await loop.run_in_executor(pool, fn, *args)

    async with community(tmp_path / "community") as nodes:
        node = nodes["home-1"]
        async with asyncio.timeout(30):  # an interval has been cleared and settled
            while node.ledger is None or node.ledger.last() is None:
                await asyncio.sleep(0.1)
        frozen = Frozen(node)
        async with Dashboard(node=frozen, port=0) as dashboard:
            browser = await call(open_browser, tmp_path / "chromium-profile")
            try:
                await call(browser.get, dashboard.url)

                async def page_matches_api() -> dict[str, str]:
                    """Wait until every value on the page is the API's, for the node's state at
                    the last ``freeze()`` (the API may serve the one before for up to its
                    ``max_age_s``); returns field texts. The timeout only bounds a page that
                    never matches: a loaded host may take a while to render."""
                    async with asyncio.timeout(30):
                        while True:
                            now_ms, fields, rows, link = await call(browser.execute_script,
                                                                    _READ_DOM)
                            # read after the page: earnings come from the live ledger, which
                            # may gain a block between two page polls
                            api = dashboard.app.handle(Request(
                                method="GET", target="/api/status",
                                headers={"host": f"127.0.0.1:{dashboard.port}"}))
                            status = json.loads(api.body)
                            want = {f: expected_text(k, pick(status, f)) for f, k, _ in fields}
                            got = {f: text for f, _, text in fields}
                            frozen_ms = str(frozen.status().now_ms)
                            if now_ms == str(status["now_ms"]) == frozen_ms and got == want:
                                assert rows == len(status["devices"]) and link == "live"
                                return got
                            await asyncio.sleep(0.2)

                first = await page_matches_api()
                assert first["node"] == "home-1"
                assert first["last_clearing.interval"] != "—"
                assert first["battery.soc_pct"].endswith(" %")
                assert first["flows.pv_w"].endswith("W")
                await call(browser.save_screenshot, str(tmp_path / "first.png"))
                await asyncio.sleep(1.5)  # 7.5 simulated minutes pass
                frozen.freeze()
                second = await page_matches_api()
                assert second["now_ms"] != first["now_ms"]  # the clock on the page moved on
                await call(browser.save_screenshot, str(tmp_path / "dashboard.png"))

                # the preferences form: the server's 422 names the field; a good value is applied
                async def submit(reserve: str) -> str:
                    await call(browser.execute_script, _SUBMIT, reserve)
                    async with asyncio.timeout(10):
                        while not (text := await call(browser.execute_script, _RESULT)):
                            await asyncio.sleep(0.1)
                    return str(text)

                # the owner logs in with the token `gridpeer dashboard pair` printed
                assert await call(browser.execute_script, _LOGIN_SHOWN)
                assert not await call(browser.execute_script, _CAN_SAVE)
                token = owner_token(tmp_path / "community" / "home-1" / "gridpeer.toml", capsys)
                field = await call(browser.find_element, By.NAME, "token")
                await call(field.send_keys, token)
                button = await call(browser.find_element, By.CSS_SELECTOR,
                                    "#login button[type=submit]")
                await call(button.click)
                async with asyncio.timeout(10):
                    while not await call(browser.execute_script, _CAN_SAVE):
                        await asyncio.sleep(0.1)
                assert not await call(browser.execute_script, _LOGIN_SHOWN)
                cookies = await call(browser.get_cookies)
                assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
                    ("gridpeer_session", True, "Strict")]

                assert (await submit("150")).startswith("reserve_pct: ")
                assert node.prefs.reserve_pct == 20
                assert await submit("30") == "saved"
                assert node.prefs.reserve_pct == 30
            finally:
                await call(browser.quit)
                pool.shutdown(wait=True)
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    if os.environ.get("GRIDPEER_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.write_bytes((tmp_path / "dashboard.png").read_bytes())
