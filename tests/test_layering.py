"""The dependency rules of docs/architecture.md, held by reading the import statements."""

import ast
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
    "sim_devices": {"gateway"},
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
        hit = _imports(path) & FORBIDDEN[package]
        if hit:
            bad[str(path.relative_to(ROOT))] = sorted(hit)
    assert not bad, f"{package}/ imports what it may not: {bad}"
