"""A device's way into the home (``gateway.home.adoption``), fed errors, seconds and intervals:
no sockets, no sleeps.

What it proves: a device that does not answer is tried again after 5 s, the wait doubling up to
5 minutes and never more; one that answers with a map it cannot be driven through is tried
hourly; one found while the home trades joins at the start of the next interval, never inside
the one whose bid was made without it; one found at start is in at once; an event its phase has
no transition for is our bug and raises.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.devices.errors import (
    BadDeviceData,
    DeviceTimeout,
    DeviceUnreachable,
    MissingModel,
    ModbusException,
    NotSunSpec,
)
from gateway.home.adoption import (
    ABSENT_FIRST_S,
    ABSENT_MAX_S,
    UNSUPPORTED_S,
    Adoption,
    IllegalTransition,
    Phase,
)
from gateway.home.status import DeviceHealth

_MISSING = MissingModel(driver="Battery", missing=(802, 713), present=(1, 129), one_of=True)
_ABSENT = (DeviceUnreachable("cannot open modbus-tcp 127.0.0.1:1502"),
           DeviceTimeout("no valid answer within 1 s"),
           ModbusException(code=11, function=3, address=40000, unit=2),
           BadDeviceData("model 1 is shorter than its fixed points"), OSError("boom"))


def test_an_absent_device_is_tried_after_5_s_doubling_up_to_5_minutes():
    adoption, now = Adoption(), 1000.0
    waits = []
    for _ in range(9):
        assert adoption.due(now)
        waits.append(adoption.failed(now, DeviceUnreachable("cannot open")))
        assert not adoption.due(now + waits[-1] - 0.001)
        now += waits[-1]
    assert waits == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    assert adoption.why == "absent" and adoption.reason == "DeviceUnreachable: cannot open"
    assert adoption.phase is Phase.WAITING and adoption.tries == 9


@pytest.mark.parametrize("error", [_MISSING, NotSunSpec("no SunS marker at 40000, 0, 50000")])
def test_a_device_it_cannot_drive_is_tried_hourly_and_says_what_is_missing(error):
    adoption = Adoption()
    assert adoption.failed(0.0, error) == UNSUPPORTED_S == 3600
    assert adoption.failed(UNSUPPORTED_S, error) == UNSUPPORTED_S
    assert adoption.why == "unsupported"
    assert adoption.reason is not None and adoption.reason.startswith(type(error).__name__)


@given(errors=st.lists(st.sampled_from(_ABSENT), min_size=1, max_size=60))
def test_the_wait_for_an_absent_device_never_shrinks_and_never_passes_the_cap(errors):
    adoption, now, last = Adoption(), 0.0, 0.0
    for error in errors:
        wait = adoption.failed(now, error)
        assert ABSENT_FIRST_S <= wait <= ABSENT_MAX_S and wait >= last
        assert adoption.why == "absent"
        now, last = now + wait, wait


def test_a_device_found_while_trading_joins_at_the_next_interval_not_inside_this_one():
    adoption = Adoption()
    adoption.failed(0.0, DeviceTimeout("asleep"))
    adoption.answered(41, trading=True)
    assert adoption.phase is Phase.FOUND and adoption.adopt_from == 42
    assert not adoption.adopt(41)
    assert adoption.adopt(42) and adoption.phase is Phase.ADOPTED
    assert adoption.reason is None and adoption.why is None and adoption.failures == 0


def test_a_device_found_at_start_is_in_the_home_at_once():
    adoption = Adoption()
    adoption.answered(7, trading=False)
    assert adoption.phase is Phase.ADOPTED


def test_an_event_the_phase_has_no_transition_for_raises():
    adoption = Adoption()
    adoption.answered(0, trading=False)
    with pytest.raises(IllegalTransition):
        adoption.failed(0.0, DeviceTimeout("late"))
    with pytest.raises(IllegalTransition):
        adoption.answered(1, trading=True)


def test_the_status_of_a_device_not_in_the_home_says_why_and_when_it_is_tried_again():
    from gateway.devices import DevicePoller

    class Never:
        async def read(self) -> int:
            raise AssertionError("not polled before adoption")

    poller = DevicePoller(name="battery", driver=Never(), period_s=1.0)
    adoption = Adoption()
    adoption.failed(100.0, _MISSING)
    health = DeviceHealth.of(poller, adoption, now_s=1000.0)
    assert health.stale and health.adoption == "waiting" and health.why == "unsupported"
    assert health.missing is not None and "[802, 713]" in health.missing
    assert health.retry_in_s == 100.0 + UNSUPPORTED_S - 1000.0 and health.tries == 1


def test_metrics_and_the_status_file_say_which_device_is_missing_and_an_unknown_soc_is_null(
        tmp_path):
    """/metrics: ``gridpeer_device_adopted`` 0 and ``gridpeer_device_missing{why}`` 1 for a
    device not in the home, and no SoC sample when it is unknown; the status file is strict
    JSON (no NaN) with the SoC null, read back as None."""
    import json

    from gateway.dashboard.metrics import render
    from gateway.home.status import BatteryStatus, Status
    from tests.dashboard.statuses import page

    waiting = DeviceHealth(stale=True, age_s=None, polls=0, failures=0, last_error=None,
                           adoption="waiting", why="unsupported",
                           missing="MissingModel: ...", retry_in_s=3000.0, tries=1)
    adopted = DeviceHealth(stale=False, age_s=0.5, polls=9, failures=0, last_error=None)
    shown = page(devices={"pv": waiting, "battery": adopted},
                 battery=BatteryStatus(soc_pct=None, power_w=0, setpoint_w=0))
    text = render(shown)
    assert 'gridpeer_device_adopted{node="home-1",device="pv"} 0' in text
    assert 'gridpeer_device_adopted{node="home-1",device="battery"} 1' in text
    assert 'gridpeer_device_missing{node="home-1",device="pv",why="unsupported"} 1' in text
    assert 'device="battery",why=' not in text
    assert "gridpeer_battery_soc_percent{" not in text
    shown.home.write(tmp_path / "status.json")
    text = (tmp_path / "status.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the status file"))
    assert data["battery"]["soc_pct"] is None
    back = Status.from_json(text)
    assert back.battery is not None and back.battery.soc_pct is None
    assert back.devices["pv"] == waiting
