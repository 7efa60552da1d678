"""Real Mosquitto processes for the deploy tests: start with a config, wait for the port, stop.

Mosquitto cannot listen on port 0 and report the port, so a free port is picked by binding one
and closing it. Another test run on the same machine may grab it first, and then a TCP probe would
find *its* broker: so a broker is ready only when its own log says "running" and the process is
still alive; a clash shows as Mosquitto exiting, with its log in the failure message.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests._require import require

_READY_S = 15.0


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )
    require(found is not None, "mosquitto")
    assert found is not None
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Brokers:
    """Starts Mosquitto processes and stops every one of them in :meth:`stop_all`."""

    binary: str
    running: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def start(self, config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
        out = log.open("wb")
        proc = subprocess.Popen([self.binary, "-c", str(config)], stdout=out, stderr=out)
        out.close()
        self.running.append(proc)
        self.logs.append(log)
        deadline = time.monotonic() + _READY_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"mosquitto -c {config} exited {proc.returncode}:\n"
                                   f"{log.read_text()}")
            if " running" in log.read_text():
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    return proc
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto -c {config} not listening on {port}:\n{log.read_text()}")

    def log_text(self) -> str:
        """Every broker's log so far, for a failure message."""
        return "\n".join(f"--- {log.name}\n{log.read_text()}" for log in self.logs)

    def stop_all(self) -> None:
        for proc in self.running:
            proc.terminate()
        for proc in self.running:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.running.clear()
