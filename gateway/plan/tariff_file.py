"""Read a tariff file from disk: by its suffix, ``.csv`` (``gateway/plan/tariff_csv.py``) or
``.toml`` (``gateway/plan/tariff_toml.py``), at most ``MAX_BYTES`` of UTF-8; no file is the
config's fixed tariffs all day."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.plan.tariff_csv import parse_csv
from gateway.plan.tariff_schedule import ScheduleError, TariffSchedule
from gateway.plan.tariff_toml import parse_toml
from protocols.clearing import Tariffs

MAX_BYTES = 2_000_000


def load_schedule(path: Path | None, *, fixed: Tariffs) -> TariffSchedule:
    """Read a ``.csv`` or ``.toml`` tariff file; ``ScheduleError`` names what is wrong. No file
    (None): the ``fixed`` tariffs all day."""
    if path is None:
        return TariffSchedule(fixed=fixed, zone=ZoneInfo("UTC"))
    if path.suffix not in (".csv", ".toml"):
        raise ScheduleError(f"{path}: a tariff file is .csv or .toml, not {path.suffix!r}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScheduleError(f"{path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_BYTES:
        raise ScheduleError(f"{path}: {len(raw)} bytes, at most {MAX_BYTES}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ScheduleError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    parse = parse_csv if path.suffix == ".csv" else parse_toml
    return parse(text, source=str(path), fixed=fixed)
