"""The ledger is a hash chain in SQLite: tamper-evident, one block per interval, crash-safe."""

import sqlite3

import pytest

from gateway.ledger import Ledger, LedgerError


def _fill(ledger: Ledger, n: int) -> None:
    for k in range(n):
        ledger.append(
            interval=10 + k,
            status="agreed",
            content={"result_hash": f"{k:064x}", "outcome": {"sold_wh": k, "money": -5 * k}},
        )


def test_chain_verifies_and_records_each_interval_once(tmp_path):
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        _fill(ledger, 5)
        assert ledger.append(interval=14, status="agreed", content={}) is None
        assert ledger.verify() == []
        assert [b.height for b, _ in ledger.blocks()] == [0, 1, 2, 3, 4]
        rows = ledger.export_csv().splitlines()
        assert rows[0].startswith("height,interval,status")
        assert rows[3].split(",")[6] == "2"  # sold_wh of block 2
    with Ledger.open(tmp_path / "ledger.db") as reopened:
        assert reopened.last().interval == 14


def test_tampering_with_a_block_is_detected(tmp_path):
    path = tmp_path / "ledger.db"
    with Ledger.open(path) as ledger:
        _fill(ledger, 4)
    db = sqlite3.connect(path)
    (text,) = db.execute("SELECT block FROM blocks WHERE height = 1").fetchone()
    forged = text.replace('"sold_wh":1', '"sold_wh":9')
    db.execute("UPDATE blocks SET block = ? WHERE height = 1", (forged,))
    db.commit()
    db.close()
    with Ledger.open(path) as ledger:
        problems = ledger.verify()
    assert any("block 1" in p and "stored hash" in p for p in problems)
    assert any("block 2" in p and "prev_hash" in p for p in problems)


def test_out_of_order_interval_is_refused(tmp_path):
    with Ledger.open(tmp_path / "l.db") as ledger:
        _fill(ledger, 2)
        with pytest.raises(ValueError, match="does not follow"):
            ledger.append(interval=3, status="agreed", content={})
        assert ledger.verify() == []


def test_a_file_that_is_not_a_ledger_gives_a_clear_error(tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LedgerError, match="not a usable ledger"):
        Ledger.open(bad)
