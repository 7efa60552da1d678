"""The node's ledger file: SQLite holding a signed header and one signed, hash-chained block per
interval (the format and its checks: ``protocols/ledger.py``).

SQLite gives the crash safety: a block is one row written in one transaction, so a SIGKILL at any
moment leaves either the whole block or none of it, and ``interval`` is UNIQUE so an interval can
never be settled twice, even by a gateway that restarts and replays its last interval.

A new ledger is made in a side file and renamed into place once its header is written, so the
ledger's path never holds a file without a header: an empty or headerless file there was cut.
The gateway opens its ledger with its :class:`LedgerOwner` and refuses one whose header names
another node. Anyone else opens it read-only (SQLite's ``mode=ro``): reading, exporting or
verifying a file never changes it, not its journal mode, not its tables, whatever file it is.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from protocols.canonical import digest
from protocols.ledger import (
    Block,
    Check,
    Expected,
    LedgerHeader,
    LedgerView,
    StoredBlock,
    audit,
    header_digest,
    new_header,
    next_block,
    sign_block,
)
from protocols.messages import SignedEnvelope
from protocols.signing import public_key_hex

APPLICATION_ID = 0x67706C67
"""SQLite's application id of a gridpeer ledger ("gplg"): a file is known by it before any table
is read."""
FORMAT = 2
"""The ledger format this gridpeer writes (SQLite ``user_version``). Format 1, before signed
headers and blocks, had no application id and a ``blocks`` table only."""

_SCHEMA = (
    "CREATE TABLE header (id INTEGER PRIMARY KEY CHECK (id = 0), header TEXT NOT NULL, "
    "sig TEXT NOT NULL)",
    "CREATE TABLE blocks (height INTEGER PRIMARY KEY, interval INTEGER NOT NULL UNIQUE, "
    "hash TEXT NOT NULL UNIQUE, block TEXT NOT NULL, sig TEXT NOT NULL)",
    "CREATE TABLE certificates (digest TEXT PRIMARY KEY, certificate TEXT NOT NULL)",
)
_FORMAT1_COLUMNS = ("height", "interval", "hash", "block")


class LedgerError(Exception):
    """The ledger file cannot be used as asked (broken, someone else's, opened read-only)."""


class NotALedger(LedgerError):
    """The file is no gridpeer ledger this gridpeer can check: another file, or ``old`` (format
    1, whose unsigned blocks prove nothing about who wrote them)."""

    def __init__(self, message: str, *, old: bool = False) -> None:
        super().__init__(message)
        self.old = old


@dataclass(frozen=True, slots=True)
class LedgerOwner:
    """The node writing a ledger: its key signs the header and every block, and its membership
    certificate (signed by the community authority) names it in the header."""

    key: Ed25519PrivateKey
    certificate: SignedEnvelope


class Ledger:
    """Append-only store of blocks. ``Ledger.open(path, owner=...)`` to write, ``Ledger.open(path)``
    to read; close with ``close()``."""

    def __init__(self, *, connection: sqlite3.Connection, path: Path, format: int,
                 owner: LedgerOwner | None) -> None:
        self._db = connection
        self.path = path
        self.format = format
        self._owner = owner
        self._genesis = ""
        if owner is not None:
            header = self._header()
            assert header is not None  # checked by open()
            self._genesis = header_digest(LedgerHeader.model_validate_json(header[0]), header[1])

    @classmethod
    def open(cls, path: Path, *, owner: LedgerOwner | None = None) -> Ledger:
        """The ledger at ``path``: read-only without ``owner``; with one, for appending, made if
        there is none yet, and refused if its header names another node."""
        if owner is None:
            return cls._read_only(path)
        if not path.exists():
            _create(path, owner)
        elif path.stat().st_size == 0:
            raise LedgerError(f"{path}: empty (0 bytes): a ledger always holds its signed header, "
                              f"so this one was cut; move it aside to start a new ledger")
        db = sqlite3.connect(path, isolation_level=None)
        try:
            cls(connection=db, path=path, format=_format(db, path), owner=None)._check_owner(owner)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            return cls(connection=db, path=path, format=FORMAT, owner=owner)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise _failure(path, exc) from exc
        except BaseException:
            db.close()
            raise

    @classmethod
    def _read_only(cls, path: Path) -> Ledger:
        if not path.exists():
            raise LedgerError(f"{path}: no such ledger")
        if path.stat().st_size == 0:
            raise LedgerError(f"{path}: empty (0 bytes): a gridpeer ledger always holds its "
                              "signed header; this file was cut or never was a ledger")
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                 isolation_level=None)
        except sqlite3.Error as exc:
            raise LedgerError(f"{path}: cannot open ({exc})") from exc
        try:
            return cls(connection=db, path=path, format=_format(db, path), owner=None)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise _failure(path, exc) from exc
        except BaseException:
            db.close()
            raise

    def _check_owner(self, owner: LedgerOwner) -> None:
        if self.format != FORMAT:
            raise NotALedger(
                f"{self.path}: a ledger of the old format (unsigned blocks): keep it for your "
                f"records (`gridpeer ledger export` still reads it) and move it aside, e.g. to "
                f"{self.path.with_name('ledger-format1.db')}; the gateway then starts a new, "
                "signed ledger", old=True)
        header = self._header()
        if header is None:
            raise LedgerError(f"{self.path}: the ledger's header is missing: it was cut; move "
                              "it aside to start a new ledger")
        checks, view = audit(header[0], header[1], ())
        if view is None:
            raise LedgerError(f"{self.path}: {checks[0].problems[0]}")
        node, key = _owner_node(owner), public_key_hex(owner.key)
        if view.node != node:
            raise LedgerError(
                f"{self.path}: the ledger of node {view.node} (key {view.public_key[:16]}...), "
                f"not of this node ({node}): another ledger was put in its place; move it aside")
        if view.public_key != key:
            raise LedgerError(
                f"{self.path}: the ledger of {node} under key {view.public_key[:16]}..., not "
                f"this gateway's key {key[:16]}...: a new key starts a new ledger; move this one "
                "aside and keep it")

    def close(self) -> None:
        """Close; the owner leaves the file out of WAL mode, so that a read-only reader of the
        closed ledger (``ledger verify``) needs no ``-wal``/``-shm`` files beside it either."""
        if self._owner is not None:
            with contextlib.suppress(sqlite3.Error):  # another reader still open: stays WAL
                self._db.execute("PRAGMA journal_mode=DELETE")
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _header(self) -> tuple[str, str] | None:
        if self.format != FORMAT:
            return None
        row = self._db.execute("SELECT header, sig FROM header WHERE id = 0").fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

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

    def append(self, *, interval: int, status: str, content: dict[str, Any],
               certificates: Iterable[SignedEnvelope] = ()) -> Block | None:
        """Write the signed block for ``interval``, with the membership ``certificates`` its
        quorum's signers hold (each kept once); returns None if that interval is already
        recorded.

        Returning None rather than raising is what makes a restarted gateway safe: it may try to
        record its last interval again, and the second record is simply not made.
        """
        if self._owner is None:
            raise LedgerError(f"{self.path}: opened read-only")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if self.has_interval(interval):
                self._db.execute("ROLLBACK")
                return None
            block = next_block(prev=self.last(), genesis=self._genesis, interval=interval,
                               status=status, content=content)
            self._db.execute(
                "INSERT INTO blocks (height, interval, hash, block, sig) VALUES (?, ?, ?, ?, ?)",
                (block.height, block.interval, block.digest(), block.model_dump_json(),
                 sign_block(block, self._owner.key)),
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO certificates (digest, certificate) VALUES (?, ?)",
                [(digest(cert.model_dump()), cert.model_dump_json()) for cert in certificates])
            self._db.execute("COMMIT")
            return block
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def blocks(self, *, from_interval: int = 0) -> Iterator[tuple[Block, str]]:
        try:
            rows = self._db.execute(
                "SELECT block, hash FROM blocks WHERE interval >= ? ORDER BY height",
                (from_interval,))
            for text, stored in rows:
                yield Block.model_validate_json(text), stored
        except sqlite3.DatabaseError as exc:
            raise _failure(self.path, exc) from exc

    def audit(self, *, expected: Expected | None = None
              ) -> tuple[list[Check], LedgerView | None]:
        """Every check this file allows on its own (:func:`protocols.ledger.audit`)."""
        if self.format != FORMAT:
            raise NotALedger(
                f"{self.path}: a ledger of the old format (unsigned blocks, before gridpeer "
                "ledger format 2): nothing in it proves who wrote it, so it cannot be verified; "
                "`gridpeer ledger export` still reads it", old=True)
        try:
            header = self._header()
            if header is None:
                return [Check("header", True, "the header", (
                    "header: missing (deleted from the file): the ledger names no node",))], None
            rows = self._db.execute(
                "SELECT height, interval, hash, block, sig FROM blocks ORDER BY height")
            stored = [StoredBlock(height=int(h), interval=int(k), hash=str(d), text=str(t),
                                  sig=str(s)) for h, k, d, t, s in rows]
            certificates = [str(text) for (text,) in self._db.execute(
                "SELECT certificate FROM certificates ORDER BY digest")]
        except sqlite3.DatabaseError as exc:
            raise _failure(self.path, exc) from exc
        return audit(header[0], header[1], stored, certificates=certificates,
                     expected=expected or Expected())

    def verify(self) -> list[str]:
        """Every problem the file shows on its own; an empty list means it is intact."""
        checks, _ = self.audit()
        return [problem for check in checks for problem in check.problems]

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


def _owner_node(owner: LedgerOwner) -> str:
    return str(owner.certificate.body.get("node"))


def _create(path: Path, owner: LedgerOwner) -> None:
    """Make a ledger holding only its signed header, in a side file renamed into place."""
    try:
        header, sig = new_header(owner.certificate, owner.key)
    except (ValueError, ValidationError) as exc:
        raise LedgerError(f"{path}: cannot start a ledger: {exc}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    side = path.with_name(path.name + ".new")
    side.unlink(missing_ok=True)
    db = sqlite3.connect(side, isolation_level=None)
    try:
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {FORMAT}")
        db.execute("BEGIN")
        for statement in _SCHEMA:
            db.execute(statement)
        db.execute("INSERT INTO header (id, header, sig) VALUES (0, ?, ?)",
                   (header.model_dump_json(), sig))
        db.execute("COMMIT")
    finally:
        db.close()
    with open(side, "rb") as f:
        os.fsync(f.fileno())
    os.replace(side, path)
    with contextlib.suppress(OSError):  # a folder that cannot be opened (some filesystems)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _failure(path: Path, exc: sqlite3.DatabaseError) -> LedgerError:
    """What SQLite's refusal means for a ledger: not a database at all, or a damaged one."""
    if getattr(exc, "sqlite_errorname", "") == "SQLITE_NOTADB":
        return NotALedger(f"{path}: not a gridpeer ledger (not a SQLite database)")
    return LedgerError(f"{path}: the file is damaged or unreadable ({exc})")


def _format(db: sqlite3.Connection, path: Path) -> int:
    """The file's ledger format; :class:`NotALedger` for anything else. Reads only."""
    application_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = sorted(str(name) for (name,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'"))
    if application_id == APPLICATION_ID:
        if version != FORMAT:
            raise NotALedger(f"{path}: a gridpeer ledger of format {version}; this gridpeer "
                             f"reads format {FORMAT}")
        return FORMAT
    if application_id == 0 and tables == ["blocks"]:
        columns = tuple(str(row[1]) for row in db.execute("PRAGMA table_info(blocks)"))
        if columns == _FORMAT1_COLUMNS:
            return 1
    kind = f"tables: {', '.join(tables)}" if tables else "no tables"
    raise NotALedger(f"{path}: not a gridpeer ledger (a SQLite database with {kind})")
