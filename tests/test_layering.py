"""The dependency rules of docs/architecture.md, held by reading the import statements."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "protocols": {"asyncio", "socket", "pymodbus", "aiomqtt", "amqtt", "sqlite3", "gateway",
                  "sim_devices", "firmware", "time", "random", "sunspec2"},
    # The market is a protocol: payloads and the time in, actions out. Its adapter in
    # gateway/market owns the broker, the clock, the log and every task.
    "protocols/market": {"asyncio", "socket", "ssl", "selectors", "threading", "subprocess",
                         "concurrent", "os", "io", "pathlib", "logging", "time", "datetime",
                         "random", "secrets", "urllib", "http", "sqlite3", "paho", "aiomqtt",
                         "amqtt", "pymodbus", "gateway", "sim_devices", "firmware"},
    "firmware": {"typing", "dataclasses", "pydantic", "cryptography", "pymodbus", "gateway",
                 "protocols", "sim_devices", "abc", "enum"},
    # The simulator stands alone; only its demo room (a street of real gateways) imports them.
    "sim_devices": {"gateway"},
    # What runs on the Pi: no simulator, no demo, no firmware.
    "gateway": {"sim_devices", "firmware"},
    # The deterministic simulation: one seed, one run, anywhere: no I/O, thread or clock.
    "sim_devices/market_sim": {"gateway", "asyncio", "socket", "threading", "time", "datetime",
                               "secrets", "subprocess", "selectors", "aiomqtt", "amqtt", "paho"},
}

EXEMPT = {
    "sim_devices": ("sim_devices/demo/",),
    # The CLI's demo and sim commands import their room inside the command function, so building
    # the parser loads neither (test_building_the_cli_parser_loads_no_simulator_or_firmware).
    "gateway": ("gateway/cli/demo.py", "gateway/cli/sim.py"),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_it_may(package: str) -> None:
    paths = sorted((ROOT / package).rglob("*.py"))
    assert paths, f"{package}/ holds no module: the rule would hold nothing"
    bad = {}
    for path in paths:
        if str(path.relative_to(ROOT)).startswith(EXEMPT.get(package, ())):
            continue
        hit = _imports(path) & FORBIDDEN[package]
        if hit:
            bad[str(path.relative_to(ROOT))] = sorted(hit)
    assert not bad, f"{package}/ imports what it may not: {bad}"


def test_building_the_cli_parser_loads_no_simulator_or_firmware() -> None:
    """The field gateway's ``gridpeer`` parser, built in a fresh interpreter, loads no
    ``sim_devices`` or ``firmware`` module: the demo and sim commands import them when run."""
    probe = ("import sys, gateway.cli as c; c.build_parser(); "
             "print([m for m in sys.modules if m.startswith(('sim_devices', 'firmware'))])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_the_cli_commands_that_need_the_simulator_import_it_only_when_run() -> None:
    """The exempt CLI modules import ``sim_devices`` only inside functions, never at the top."""
    for rel in EXEMPT["gateway"]:
        tree = ast.parse((ROOT / rel).read_text())
        top = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                top.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                top.add(node.module.split(".")[0])
        assert not top & FORBIDDEN["gateway"], f"{rel} imports {top & FORBIDDEN['gateway']}"


INNER = (
    # The installer's tools run on the installer's laptop; the service on the Pi needs only
    # gateway.tls (the CLI drives the tools).
    ("gateway", ("gateway/installer/", "gateway/cli/"), "gateway.installer"),
    # The simulator stands alone; its demo room (which imports the gateway) sits on top of it.
    ("sim_devices", ("sim_devices/demo/",), "sim_devices.demo"),
)


@pytest.mark.parametrize(("package", "inside", "room"), INNER)
def test_a_package_imports_its_inner_room_only_from_where_it_may(
        package: str, inside: tuple[str, ...], room: str) -> None:
    bad = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(inside):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     else [])
            hit = [n for n in names if n == room or n.startswith(room + ".")]
            if hit:
                bad[rel] = hit
    assert not bad, f"{package}/ imports {room} from outside {inside}: {bad}"
