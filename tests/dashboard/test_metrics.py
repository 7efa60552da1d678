"""Prometheus exposition: exact lines for a known status, and a grammar check of every line."""

import re

from gateway.dashboard import metrics
from gateway.dashboard.status import Flows
from gateway.home.status import BatteryStatus
from tests.dashboard.statuses import health, page

STATUS = page(
    node="home-1", mode="safe", money_today=-1234,
    battery=BatteryStatus(soc_pct=47.5, power_w=-800, setpoint_w=-750),
    devices={
        "meter": health(stale=False, polls=10, failures=0),
        "bat\"tery\\x\n": health(stale=True, polls=7, failures=3),
    },
    rejections={"bad-signature": 2, "late": 1},
    flows=Flows(pv_w=3000, home_w=None, battery_w=-800, grid_w=-1500),
    earnings={"today": 1234, "month": 56789},
)

# text format 0.0.4: comment lines, or name{labels} value (no timestamps from us)
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = rf'{_NAME}="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{{_LABEL}(?:,{_LABEL})*\}})? (-?[0-9.e+]+|NaN|[+-]Inf)$")
_META = re.compile(rf"^# (HELP|TYPE) ({_NAME}) (.+)$")


REFUSALS = {"foreign-host": 2, "request-timeout": 1}


def test_every_line_follows_the_text_format_and_types_are_declared_first():
    text = metrics.render(STATUS, refusals=REFUSALS)
    assert text.endswith("\n")
    typed: dict[str, str] = {}
    for line in text.splitlines():
        meta = _META.match(line)
        if meta:
            if meta.group(1) == "TYPE":
                assert meta.group(3) in ("gauge", "counter") and meta.group(2) not in typed
                typed[meta.group(2)] = meta.group(3)
            continue
        sample = _SAMPLE.match(line)
        assert sample, line
        assert sample.group(1) in typed, f"sample before its TYPE: {line}"
        if typed[sample.group(1)] == "counter":
            assert sample.group(1).endswith("_total")


def test_values_and_labels():
    lines = set(metrics.render(STATUS, refusals=REFUSALS).splitlines())
    expected = {
        'gridpeer_battery_soc_percent{node="home-1"} 47.5',
        'gridpeer_power_watts{node="home-1",flow="pv"} 3000',
        'gridpeer_power_watts{node="home-1",flow="grid"} -1500',
        'gridpeer_battery_setpoint_watts{node="home-1"} -750',
        'gridpeer_safe_mode{node="home-1"} 1',
        'gridpeer_devices_stale{node="home-1"} 1',
        'gridpeer_device_stale{node="home-1",device="bat\\"tery\\\\x\\n"} 1',
        'gridpeer_device_poll_failures_total{node="home-1",device="bat\\"tery\\\\x\\n"} 3',
        'gridpeer_device_polls_total{node="home-1",device="meter"} 10',
        'gridpeer_rejections_total{node="home-1",reason="bad-signature"} 2',
        'gridpeer_money_today_micro{node="home-1"} -1234',
        'gridpeer_earnings_micro{node="home-1",period="month"} 56789',
        'gridpeer_dashboard_refusals_total{node="home-1",reason="foreign-host"} 2',
    }
    assert expected <= lines, expected - lines
    # an unknown value is left out, never exported as a false 0
    assert not any('flow="home"' in line for line in lines)


def test_a_node_with_nothing_known_yet_still_renders():
    text = metrics.render(page(node="n", mode="market", battery=None, devices={}))
    assert 'gridpeer_safe_mode{node="n"} 0' in text
    assert "gridpeer_battery_soc_percent{" not in text
