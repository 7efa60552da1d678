"""The Pi install script parses and lints clean; the systemd unit carries its hardening and
passes ``systemd-analyze verify``."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

from tests._require import require

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SCRIPT = DEPLOY / "install-pi.sh"
UNIT = DEPLOY / "gridpeer.service"

HARDENING = {
    "User": "gridpeer",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "ReadWritePaths": "/var/lib/gridpeer",
    "Restart": "on-failure",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "DevicePolicy": "closed",
    "SystemCallArchitectures": "native",
}


def unit_service_section(wanted: str = "[Service]") -> dict[str, list[str]]:
    """Key -> every value given in ``wanted`` (systemd allows repeated keys, configparser does
    not)."""
    values: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        if section == wanted:
            values.setdefault(key, []).append(value)
    return values


def test_install_script_is_valid_bash_and_strict() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    for needed in ("/opt/gridpeer", "/etc/gridpeer", "/var/lib/gridpeer", "gridpeer.service",
                   "useradd --system"):
        assert needed in text


def test_install_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    require(shellcheck is not None, "shellcheck not installed (apt-get install shellcheck)")
    assert shellcheck is not None
    subprocess.run([shellcheck, str(SCRIPT)], check=True)


def test_install_script_help_runs_without_root() -> None:
    done = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True,
                          check=True)
    assert "/opt/gridpeer" in done.stdout
    bad = subprocess.run(["bash", str(SCRIPT), "--no-such-flag"], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "unknown argument" in bad.stderr


def test_unit_has_the_hardening_keys() -> None:
    service = unit_service_section()
    for key, value in HARDENING.items():
        assert value in service.get(key, []), (key, service.get(key))
    assert int(service["RestartSec"][0]) > 0
    assert service["ExecStart"][0].startswith("/opt/gridpeer/bin/gridpeer run --config /etc/")
    parsed = configparser.ConfigParser(strict=False)
    parsed.read_string(UNIT.read_text())
    assert parsed["Install"]["WantedBy"] == "multi-user.target"


def test_unit_never_hits_the_start_limit() -> None:
    """systemd stops restarting a unit that starts StartLimitBurst times in
    StartLimitIntervalSec; a gateway given up on stays down until someone intervenes. The unit
    switches the limit off (0), or backs off with RestartSteps up to RestartMaxDelaySec."""
    unit, service = unit_service_section("[Unit]"), unit_service_section()
    limit_off = unit.get("StartLimitIntervalSec", [None])[-1] == "0"
    backs_off = "RestartSteps" in service and "RestartMaxDelaySec" in service
    assert limit_off or backs_off, (unit, service)
    assert service["Restart"][-1] in ("on-failure", "always")


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    require(analyze is not None, "systemd-analyze not installed (apt-get install systemd)")
    assert analyze is not None
    gridpeer = shutil.which("gridpeer")
    assert gridpeer is not None, "the gridpeer entry point is installed with the package"
    # verify checks that ExecStart exists: point it at this machine's gridpeer, nothing else.
    unit = tmp_path / "gridpeer.service"
    unit.write_text(UNIT.read_text().replace("/opt/gridpeer/bin/gridpeer", gridpeer))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
