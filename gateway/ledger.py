"""The node's ledger: a SQLite file in WAL mode, one hash-chained block per interval.

SQLite gives the crash safety: a block is one row written in one transaction, so a SIGKILL at any
moment leaves either the whole block or none of it, and ``interval`` is UNIQUE so an interval can
never be settled twice, even by a gateway that restarts and replays its last interval.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from protocols.ledger import Block, next_block, verify_chain

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    height    INTEGER PRIMARY KEY,
    interval  INTEGER NOT NULL UNIQUE,
    hash      TEXT NOT NULL UNIQUE,
    block     TEXT NOT NULL
)
"""


class LedgerError(Exception):
    """The ledger file cannot be used (not a gridpeer ledger, or broken)."""


class Ledger:
    """Append-only store of blocks. Open with ``Ledger.open(path)``; close with ``close()``."""

    def __init__(self, *, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Ledger:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(path, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{path}: not a usable ledger ({exc})") from exc
        return cls(connection=db, path=path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def last(self) -> Block | None:
        row = self._db.execute("SELECT block FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
        return None if row is None else Block.model_validate_json(row[0])

    def height(self) -> int:
        """The last block's height; -1 for an empty ledger."""
        row = self._db.execute("SELECT MAX(height) FROM blocks").fetchone()
        return -1 if row[0] is None else int(row[0])

    def has_interval(self, interval: int) -> bool:
        row = self._db.execute("SELECT 1 FROM blocks WHERE interval = ?", (interval,)).fetchone()
        return row is not None

    def append(self, *, interval: int, status: str, content: dict[str, Any]) -> Block | None:
        """Write the block for ``interval``; returns None if that interval is already recorded.

        Returning None rather than raising is what makes a restarted gateway safe: it may try to
        record its last interval again, and the second record is simply not made.
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if self.has_interval(interval):
                self._db.execute("ROLLBACK")
                return None
            block = next_block(prev=self.last(), interval=interval, status=status, content=content)
            self._db.execute(
                "INSERT INTO blocks (height, interval, hash, block) VALUES (?, ?, ?, ?)",
                (block.height, block.interval, block.digest(), block.model_dump_json()),
            )
            self._db.execute("COMMIT")
            return block
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def blocks(self, *, from_interval: int = 0) -> Iterator[tuple[Block, str]]:
        rows = self._db.execute(
            "SELECT block, hash FROM blocks WHERE interval >= ? ORDER BY height", (from_interval,)
        )
        for text, stored in rows:
            yield Block.model_validate_json(text), stored

    def verify(self) -> list[str]:
        """Every problem in the chain; an empty list means the ledger is intact."""
        try:
            return verify_chain(self.blocks())
        except ValueError as exc:  # a row that is not a block at all
            return [f"unreadable block: {exc}"]

    def export_csv(self) -> str:
        """One row per block for billing: interval, status, energy and money (µ, + = paid)."""
        out = io.StringIO()
        fields = ["height", "interval", "status", "cleared_wh", "delivered_wh", "bought_wh",
                  "sold_wh", "grid_import_wh", "grid_export_wh", "money", "result_hash", "hash"]
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        for block, stored in self.blocks():
            own = block.content.get("outcome") or {}
            writer.writerow({
                "height": block.height,
                "interval": block.interval,
                "status": block.status,
                "cleared_wh": own.get("cleared_wh", 0),
                "delivered_wh": own.get("delivered_wh", 0),
                "bought_wh": own.get("bought_wh", 0),
                "sold_wh": own.get("sold_wh", 0),
                "grid_import_wh": own.get("grid_import_wh", 0),
                "grid_export_wh": own.get("grid_export_wh", 0),
                "money": own.get("money", 0),
                "result_hash": block.content.get("result_hash", ""),
                "hash": stored,
            })
        return out.getvalue()

    def dump_json(self) -> str:
        return json.dumps([b.model_dump() for b, _ in self.blocks()], indent=1)
