"""``gridpeer demo`` from the command line: progress, summary, the HTML report, and bad input."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from gateway.cli import main

pytestmark = pytest.mark.realtime(cores=2)  # the demo runs its baseline in a second process


def test_demo_prints_progress_and_summary_and_writes_a_self_contained_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--intervals", "4", "--speed", "360"]) == 0
    printed = capsys.readouterr().out
    # piped (not a terminal): one plain line per interval, no carriage returns
    assert "\r" not in printed
    assert len(re.findall(r"^\d\d:\d\d  interval +\d/4  price", printed, re.M)) == 4
    for figure in ("energy traded locally", "community self-sufficiency", "P2P price range",
                   "no-market bill"):
        assert figure in printed
    # the baseline ran as its own community: its ledgers are apart from the market's
    assert (out / "no_market" / "home-1" / "state" / "ledger.db").is_file()
    assert (out / "home-1" / "state" / "ledger.db").is_file()

    report = (out / "report.html").read_text(encoding="utf-8")
    assert report.count("<svg") == 4
    for caption in ("Grid power per home", "state of charge", "Clearing price",
                    "Energy traded"):
        assert caption in report
    assert report.count("<polyline") >= 6 + 6  # a power and an SoC line per home
    assert all(f"<td>home-{i}</td>" in report for i in range(1, 7))
    assert "no-market bill" in report
    assert not re.search(r"""(src|href)=["']?https?:""", report)  # nothing fetched


@pytest.mark.parametrize(("args", "expected"), [
    (("--scenario", "no-such-street"), "no scenario 'no-such-street'"),
    (("--broker", "http://127.0.0.1:1883"), "--broker must look like mqtt://"),
])
def test_demo_refuses_bad_input_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: str,
) -> None:
    assert main(["demo", "--out", str(tmp_path), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gridpeer: ") and expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_demo_with_a_broken_scenario_file_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    bad = tmp_path / "street.toml"
    bad.write_text('name = "street"\n[market]\ncommunity = "street"\n\n'
                   '[[homes]]\nname = "home-1"\nbattery_wh = -5\n', encoding="utf-8")
    assert main(["demo", "--out", str(tmp_path / "out"), "--scenario", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"gridpeer: {bad}: homes.0.battery_wh: must be > 0"
    assert not (tmp_path / "out").exists()


def test_demo_with_an_unreachable_broker_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert main(["demo", "--out", str(tmp_path), "--broker", f"mqtt://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"gridpeer: cannot reach the broker at mqtt://127.0.0.1:{port}")
    assert len(err.strip().splitlines()) == 1
