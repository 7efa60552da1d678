"""`gridpeer flash` against a real MicroPython REPL standing in for the board.

The board is the WebAssembly port's REPL (tests/firmware/repl_bridge.mjs) behind a pty: the test
relays bytes between the pty's master and the Node process, and mpremote opens the slave as the
board's serial port. So mpy-cross, mpremote's raw REPL, `fs cp`, `reset` and the verification all
run for real; only the silicon is missing.
"""

import argparse
import os
import select
import shutil
import stat
import subprocess
import threading
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware import config
from gateway.cli import flash as flash_cli
from gateway.cli.flash import add_flash_parser
from gateway.installer import flash as flash_mod
from gateway.installer.flash import FlashError, flash
from tests._require import require

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
BRIDGE = Path(__file__).with_name("repl_bridge.mjs")

pytestmark = pytest.mark.micropython


class PtyBoard:
    """The REPL bridge behind a pty; ``port`` is the path mpremote opens."""

    def __init__(self) -> None:
        node = shutil.which("node")
        require(node is not None, "node is not installed")
        require((PACKAGE / "micropython.mjs").exists(), "run `npm install` for the port")
        require(shutil.which("mpremote") is not None, "pip install mpremote")
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo: the board's output must not come back as input
        self.port = os.ttyname(self._slave)
        self._node = subprocess.Popen([node, str(BRIDGE), str(ROOT), "repl"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        node_out = self._node.stdout.fileno()
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master, node_out], [], [], 0.05)
            if self._master in ready:
                self._node.stdin.write(os.read(self._master, 4096))
                self._node.stdin.flush()
            if node_out in ready:
                data = os.read(node_out, 4096)
                if not data:
                    return
                os.write(self._master, data)

    def mpremote(self, *args: str) -> str:
        run = subprocess.run(["mpremote", "connect", self.port, *args], capture_output=True,
                             text=True, timeout=60, check=False)
        assert run.returncode == 0, run.stderr + run.stdout
        return run.stdout

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._node.kill()
        self._node.wait()
        self._node.stdin.close()
        self._node.stdout.close()
        os.close(self._master)
        os.close(self._slave)


@pytest.fixture
def board() -> Iterator[PtyBoard]:
    b = PtyBoard()
    try:
        yield b
    finally:
        b.close()


async def test_flash_compiles_copies_keys_resets_and_verifies(board: PtyBoard,
                                                              tmp_path: Path) -> None:
    steps: list[str] = []
    done = await flash(port=board.port, role="meter", device_id="home7-meter", unit=7,
                       baud=19200, key_out_dir=tmp_path / "keys", progress=steps.append,
                       verify="repl")

    assert [s.split()[0] for s in steps if s[0].isdigit()] == ["1/5", "2/5", "3/5", "4/5", "5/5"]
    assert steps[-1].endswith("gridpeer gridpeer-meter serial home7-meter unit 7: ok")

    key_hex = done.key_path.read_text().strip()
    assert done.key_path == tmp_path / "keys" / "home7-meter.key"
    assert stat.S_IMODE(done.key_path.stat().st_mode) == 0o600
    assert len(bytes.fromhex(key_hex)) == 32

    # What is on the board: bytecode, main.py as source, and a config the firmware accepts.
    listing = board.mpremote("fs", "ls", ":firmware/modbus")
    assert "rtu.mpy" in listing and ".py" not in listing.replace(".mpy", "")
    cfg = config.parse(board.mpremote("fs", "cat", ":config.json"))
    assert (cfg.error, cfg.device_id, cfg.role, cfg.unit, cfg.baud) == (
        0, "home7-meter", "meter", 7, 19200)
    assert cfg.key.hex() == key_hex
    assert "asyncio" in board.mpremote("fs", "cat", ":main.py")


async def test_reflash_makes_a_new_key_and_keeps_mode_600(board: PtyBoard, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first = await flash(port=board.port, role="pv", device_id="pv-1", key_out_dir=keys,
                        progress=lambda _: None, verify="repl")
    key1 = first.key_path.read_text()
    first.key_path.chmod(0o644)
    second = await flash(port=board.port, role="pv", device_id="pv-1", key_out_dir=keys,
                         progress=lambda _: None, verify="repl")
    assert second.key_path.read_text() != key1
    assert stat.S_IMODE(second.key_path.stat().st_mode) == 0o600


async def test_verify_fails_when_the_board_is_someone_else(board: PtyBoard,
                                                           tmp_path: Path) -> None:
    await flash(port=board.port, role="battery", device_id="bat-1", key_out_dir=tmp_path,
                progress=lambda _: None, verify="repl")
    with pytest.raises(FlashError, match="SN is 'bat-1', expected 'bat-2'"):
        await flash_mod.verify_common(role="battery", device_id="bat-2", unit=1, verify="repl",
                                      port=board.port)


async def test_bad_arguments_fail_before_touching_the_board(tmp_path: Path) -> None:
    with pytest.raises(FlashError, match="unknown role"):
        await flash(port="/dev/null", role="toaster", device_id="x", key_out_dir=tmp_path,
                    progress=lambda _: None)
    with pytest.raises(FlashError, match="device id"):
        await flash(port="/dev/null", role="meter", device_id="a b", key_out_dir=tmp_path,
                    progress=lambda _: None)
    assert not list(tmp_path.iterdir())


async def test_mpremote_failure_names_the_step(tmp_path: Path) -> None:
    require(shutil.which("mpremote") is not None, "pip install mpremote")
    with pytest.raises(FlashError, match="copy failed"):
        await flash(port=str(tmp_path / "no-such-port"), role="meter", device_id="m",
                    key_out_dir=tmp_path / "keys", progress=lambda _: None, verify="repl")


def test_flash_subcommand_parses() -> None:
    parser = argparse.ArgumentParser(prog="gridpeer")
    add_flash_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["flash", "--port", "/dev/ttyUSB0", "--role", "meter",
                              "--device-id", "m-1", "--unit", "3", "--verify", "tcp",
                              "--host", "10.0.0.7"])
    assert (args.port, args.role, args.device_id, args.unit, args.baud, args.verify,
            args.host) == ("/dev/ttyUSB0", "meter", "m-1", 3, 9600, "tcp", "10.0.0.7")
    assert args.func is flash_cli._cmd_flash
