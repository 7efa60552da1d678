"""``GET /metrics``: the dashboard status in Prometheus text exposition format 0.0.4.

Rendered from the same status as the page (``PageStatus``), so a Grafana panel and the dashboard
never disagree. Every sample carries the ``node`` label: a community's Prometheus scrapes many
gateways and the instance label alone (an IP address) says nothing to the person reading the
graph. A value that is unknown right now (stale device) is left out rather than exported as 0,
which would draw a false drop in every graph.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict

from gateway.dashboard.status import PageStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[Mapping[str, str], float | int | None]


def escape_label(value: str) -> str:
    """Label values escape backslash, double quote and newline (and nothing else)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float | int) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _family(
    name: str, kind: str, help_text: str, samples: Iterable[Sample], *, node: str
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        if value is None:
            continue
        pairs = {"node": node, **labels}
        text = ",".join(f'{k}="{escape_label(v)}"' for k, v in pairs.items())
        lines.append(f"{name}{{{text}}} {_number(value)}")
    return lines


def render(page: PageStatus, *, refusals: Mapping[str, int] | None = None) -> str:
    """The exposition text for one status and the dashboard's own refused requests by reason."""
    status = page.home
    node = status.node
    battery, devices = status.battery, status.devices
    families: list[tuple[str, str, str, list[Sample]]] = [
        ("gridpeer_battery_soc_percent", "gauge", "Battery state of charge.",
         [({}, None if battery is None else battery.soc_pct)]),
        ("gridpeer_power_watts", "gauge",
         "Power by flow: grid + import, battery + charge, pv production, home consumption.",
         [({"flow": flow.removesuffix("_w")}, value)
          for flow, value in asdict(page.flows).items()]),
        ("gridpeer_battery_setpoint_watts", "gauge", "Battery setpoint last written (+ charge).",
         [({}, None if battery is None else battery.setpoint_w)]),
        ("gridpeer_safe_mode", "gauge", "1 while the gateway is in safe mode (no market dispatch).",
         [({}, int(status.mode == "safe"))]),
        ("gridpeer_devices_stale", "gauge", "Number of devices whose data must not be acted on.",
         [({}, sum(1 for d in devices.values() if d.stale))]),
        ("gridpeer_device_stale", "gauge", "1 when this device's data is stale.",
         [({"device": name}, int(d.stale)) for name, d in devices.items()]),
        ("gridpeer_device_adopted", "gauge",
         "1 when the device is in the home, 0 while it is not and is tried again.",
         [({"device": name}, int(d.adoption == "adopted")) for name, d in devices.items()]),
        ("gridpeer_device_missing", "gauge",
         "1 while a device is not in the home, by why: absent (no answer) or unsupported.",
         [({"device": name, "why": d.why or "absent"}, 1)
          for name, d in devices.items() if d.adoption == "waiting"]),
        ("gridpeer_device_polls_total", "counter", "Polls of each device since start.",
         [({"device": name}, d.polls) for name, d in devices.items()]),
        ("gridpeer_device_poll_failures_total", "counter", "Failed polls of each device.",
         [({"device": name}, d.failures) for name, d in devices.items()]),
        ("gridpeer_rejections_total", "counter", "Peer messages rejected, by reason.",
         [({"reason": reason}, count) for reason, count in sorted(status.rejections.items())]),
        ("gridpeer_meter_rejections_total", "counter",
         "Own meter readings not settled on, by reason.",
         [({"reason": reason}, count)
          for reason, count in sorted(status.meter_rejections.items())]),
        ("gridpeer_control_faults_total", "counter",
         "Unexpected errors answered with the safe state, by task and type.",
         [({"kind": kind}, count)
          for kind, count in sorted(status.control_faults.items())]),
        ("gridpeer_device_holds_total", "counter",
         "Times a device's own report held it idle, by device.",
         [({"device": name}, count)
          for name, count in sorted(status.device_holds.items())]),
        ("gridpeer_money_today_micro", "gauge", "Net money today in micro-units (+ = paid).",
         [({}, status.money_today)]),
        ("gridpeer_earnings_micro", "gauge", "Money earned in micro-units (+ = received).",
         [({"period": period}, value) for period, value in page.earnings.items()]),
    ]
    families.append(
        ("gridpeer_dashboard_refusals_total", "counter",
         "Dashboard requests and connections refused, by reason.",
         [({"reason": reason}, count) for reason, count in sorted((refusals or {}).items())]))
    lines: list[str] = []
    for name, kind, help_text, samples in families:
        lines += _family(name, kind, help_text, samples, node=node)
    return "\n".join(lines) + "\n"
