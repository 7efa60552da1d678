"""The gridpeer command: what installers and homeowners type, and what bad input gets."""

import stat
import time

import pytest

from gateway.cli import main
from gateway.config import load_config
from protocols.messages import SignedEnvelope
from protocols.signing import Verified, check_certificate

AUTHORITY = "0a" * 32  # a point of full order: any such key will do where none is checked


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse usage errors
        code = int(exit_.code)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_init_writes_a_loadable_config_and_an_owner_only_key(tmp_path, capsys):
    code, out, _ = _run(capsys, "init", "--dir", str(tmp_path), "--node", "home-7",
                        "--authority-key", AUTHORITY)
    assert code == 0 and "node public key:" in out
    assert stat.S_IMODE((tmp_path / "node.key").stat().st_mode) == 0o600
    config = load_config(tmp_path / "gridpeer.toml")
    assert config.node == "home-7" and {d.kind for d in config.devices} == {"meter", "battery"}
    code, _, err = _run(capsys, "init", "--dir", str(tmp_path), "--authority-key", AUTHORITY)
    assert code == 1 and "already exists" in err


def test_installer_admits_and_revokes_a_node(tmp_path, capsys):
    authority = tmp_path / "authority.key"
    code, out, _ = _run(capsys, "community", "init", "--key", str(authority))
    assert code == 0
    authority_hex = out.split("authority public key: ")[1].strip()
    code, out, _ = _run(capsys, "init", "--dir", str(tmp_path / "home2"), "--node", "home-2",
                        "--authority-key", authority_hex)
    node_hex = out.split("node public key: ")[1].split()[0]
    cert_path = tmp_path / "home-2.cert"
    code, out, err = _run(
        capsys, "community", "admit", "--key", str(authority), "--community", "elm-street",
        "--node", "home-2", "--public-key", node_hex, "--bus", "bus-3", "--out", str(cert_path),
    )
    assert code == 0, err
    envelope = SignedEnvelope.from_bytes(cert_path.read_bytes())
    checked = check_certificate(envelope, authority_hex, community="elm-street",
                                now_ms=time.time_ns() // 1_000_000)
    assert isinstance(checked, Verified) and checked.body.bus == "bus-3"
    assert checked.body.public_key == node_hex
    code, _, err = _run(
        capsys, "community", "revoke", "--key", str(authority), "--community", "elm-street",
        "--node", "home-2", "--public-key", node_hex, "--out", str(tmp_path / "home-2.revoke"),
    )
    assert code == 0, err
    assert SignedEnvelope.from_bytes((tmp_path / "home-2.revoke").read_bytes()).kind == "revoke"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("community", "admit", "--community", "c", "--node", "n", "--public-key", "xyz",
          "--out", "x"), "expected 64 lowercase hex"),
        (("demo", "--intervals", "0"), "must be at least 1"),
        (("ledger", "verify", "/nonexistent/ledger.db"), "no such ledger"),
        (("status", "--config", "/nonexistent/gridpeer.toml"), "gridpeer init"),
        (("run", "--config", "/nonexistent/gridpeer.toml"), "no such file"),
    ],
)
def test_bad_input_gets_one_clear_line_not_a_traceback(capsys, argv, message):
    code, _, err = _run(capsys, *argv)
    assert code in (1, 2)
    assert message in err and "Traceback" not in err


def test_admit_with_a_bad_node_id_is_refused_clearly(tmp_path, capsys):
    authority = tmp_path / "a.key"
    _run(capsys, "community", "init", "--key", str(authority))
    code, _, err = _run(
        capsys, "community", "admit", "--key", str(authority), "--community", "elm-street",
        "--node", "Bad Node!", "--public-key", "0a" * 32, "--out", str(tmp_path / "c"),
    )
    assert code == 1 and "node" in err and "Traceback" not in err


def test_status_says_what_needs_attention_by_reason(tmp_path, capsys):
    """What the gateway held back or refused, counted by reason, is in the plain status too (it
    was only in ``--json``): a car that did not feed the home, a device held idle, a fault."""
    from tests.dashboard.statuses import status

    _run(capsys, "init", "--dir", str(tmp_path), "--node", "home-1", "--authority-key", AUTHORITY)
    config = load_config(tmp_path / "gridpeer.toml")
    config.state_dir.mkdir(parents=True, exist_ok=True)
    status(v2g_refusals={"at-floor": 3, "pack SoC": 1}, device_holds={"battery": 2},
           control_faults={"trader": 1}).write(config.state_dir / "status.json")
    code, out, _ = _run(capsys, "status", "--config", str(tmp_path / "gridpeer.toml"))
    assert code == 0
    assert "  car not fed back: at-floor 3, pack SoC 1" in out
    assert "  devices held idle: battery 2" in out and "  control faults: trader 1" in out
    assert "meter readings refused" not in out  # none: nothing to say

