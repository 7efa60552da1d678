"""Typed statuses for the dashboard's unit tests: every field empty unless the test sets it."""

from typing import Any

from gateway.dashboard.status import Flows, PageStatus
from gateway.home.status import DeviceHealth, Status

EMPTY: dict[str, Any] = {
    "node": "home-1", "now_ms": 0, "interval": 0, "mode": "market", "safe_reason": "",
    "devices": {}, "battery": None, "meter": None, "pv": None, "bid": None,
    "last_clearing": None, "money_today": 0, "rejections": {}, "reputation": None,
    "meter_rejections": {}, "control_faults": {}, "device_holds": {}, "converter": None,
}


def status(**fields: Any) -> Status:
    return Status(**{**EMPTY, **fields})


def page(*, flows: Flows | None = None, earnings: dict[str, int] | None = None,
         **fields: Any) -> PageStatus:
    return PageStatus(home=status(**fields), flows=flows or Flows(None, None, None, None),
                      earnings=earnings or {})


def health(*, stale: bool, polls: int, failures: int) -> DeviceHealth:
    return DeviceHealth(stale=stale, age_s=None, polls=polls, failures=failures, last_error=None)
