"""The dashboard page in headless Chromium says "unknown" for a battery that does not report its
state of charge (``BatteryStatus.soc_pct`` None), never a number, 0 or "NaN"; the rest of the
battery still shows. A real gateway of the demo street serves it; its status is taken at one
moment with the SoC the battery did not give (a draft-era DER map leaves it unimplemented)."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gateway.dashboard import Dashboard
from gateway.dashboard.app import Request
from gateway.home import GatewayNode, Status
from tests._require import require
from tests.dashboard.community import DEMO_HOMES, community
from tests.dashboard.test_browser import CHROMEDRIVER, CHROMIUM, open_browser

pytestmark = pytest.mark.realtime

_READ = """
return [document.body.dataset.nowMs || null,
        document.querySelector('[data-field="battery.soc_pct"]').textContent,
        document.querySelector('[data-field="battery.setpoint_w"]')?.textContent ?? null];
"""


class NoSoc:
    """A real node's status, read once, with its battery's SoC unknown."""

    def __init__(self, node: GatewayNode) -> None:
        self._node = node
        self.config, self.timing, self.ledger = node.config, node.timing, node.ledger
        status = node.status()
        assert status.battery is not None
        self._status = dataclasses.replace(
            status, battery=dataclasses.replace(status.battery, soc_pct=None))

    def status(self) -> Status:
        return self._status

    def update_preferences(self, prefs: Any) -> None:
        self._node.update_preferences(prefs)


async def test_the_page_says_unknown_for_a_battery_without_a_state_of_charge(
    tmp_path: Path,
) -> None:
    require(shutil.which(CHROMIUM) is not None and shutil.which(CHROMEDRIVER) is not None,
            "headless Chromium: apt-get install -y chromium chromium-driver")
    require(importlib.util.find_spec("selenium") is not None, "pip install selenium")
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=1)  # selenium blocks: keep it off the event loop

    async def call(fn: Any, *args: Any) -> Any:
        return await loop.run_in_executor(pool, fn, *args)

    async with community(tmp_path / "community", homes=DEMO_HOMES[:1]) as nodes:
        (node,) = nodes.values()
        frozen = NoSoc(node)
        async with Dashboard(node=frozen, port=0) as dashboard:
            api = dashboard.app.handle(Request(
                method="GET", target="/api/status",
                headers={"host": f"127.0.0.1:{dashboard.port}"}))
            battery = json.loads(api.body)["battery"]
            assert battery["soc_pct"] is None and battery["setpoint_w"] is not None
            browser = await call(open_browser, tmp_path / "chromium-profile")
            try:
                await call(browser.get, dashboard.url)
                async with asyncio.timeout(20):  # until the page has shown this status
                    while True:
                        now_ms, soc, setpoint = await call(browser.execute_script, _READ)
                        if now_ms == str(frozen.status().now_ms):
                            break
                        await asyncio.sleep(0.2)
            finally:
                await call(browser.quit)
                pool.shutdown(wait=True)
    assert soc == "unknown"
    assert setpoint is not None and setpoint.endswith("W")  # the rest of the battery shows
