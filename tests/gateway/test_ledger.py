"""The ledger file: one signed header, hash-chained signed blocks, crash-safe, read-only to all but
its owner. (Tampering with ledgers the closing path wrote: test_ledger_tampering.py.)"""

import json
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ledger import APPLICATION_ID, Ledger, LedgerError, LedgerOwner, NotALedger
from protocols.ledger import quorum_envelopes, quorum_record
from protocols.messages import Commitment, bid_set_digest
from protocols.signing import generate_key, sign
from tests.ledger_owner import make_owner as owner


def _fill(ledger: Ledger, n: int) -> None:
    for k in range(n):
        ledger.append(interval=10 + k, status="abstained",
                      content={"reason": "no-quorum", "outcome": {"sold_wh": k, "money": -5 * k}})


def test_chain_verifies_and_records_each_interval_once(tmp_path):
    me = owner()
    with Ledger.open(tmp_path / "ledger.db", owner=me) as ledger:
        _fill(ledger, 5)
        assert ledger.append(interval=14, status="abstained", content={}) is None
        assert ledger.verify() == []
        assert [b.height for b, _ in ledger.blocks()] == [0, 1, 2, 3, 4]
        rows = ledger.export_csv().splitlines()
        assert rows[0].startswith("height,interval,status")
        assert rows[3].split(",")[6] == "2"  # sold_wh of block 2
    with Ledger.open(tmp_path / "ledger.db", owner=me) as reopened:
        assert reopened.last().interval == 14
        reopened.append(interval=15, status="abstained", content={})
    with Ledger.open(tmp_path / "ledger.db") as read_only:
        assert read_only.verify() == [] and read_only.height() == 5


def test_a_new_ledger_appears_whole_with_its_header(tmp_path):
    path = tmp_path / "state" / "ledger.db"
    Ledger.open(path, owner=owner()).close()
    assert sorted(p.name for p in path.parent.iterdir() if ".db" in p.name) == ["ledger.db"]
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
        assert db.execute("SELECT COUNT(*) FROM header").fetchone() == (1,)
    db.close()


def test_read_only_means_read_only(tmp_path):
    path = tmp_path / "ledger.db"
    with Ledger.open(path, owner=owner()) as ledger:
        _fill(ledger, 2)
    before = path.read_bytes()
    with Ledger.open(path) as ledger, pytest.raises(LedgerError, match="read-only"):
        assert ledger.verify() == []
        ledger.append(interval=99, status="abstained", content={})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.db"]  # no -wal, no -shm
    with pytest.raises(LedgerError, match="no such ledger"):
        Ledger.open(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


def test_out_of_order_interval_is_refused(tmp_path):
    with Ledger.open(tmp_path / "l.db", owner=owner()) as ledger:
        _fill(ledger, 2)
        with pytest.raises(ValueError, match="does not follow"):
            ledger.append(interval=3, status="agreed", content={})
        assert ledger.verify() == []


def test_a_file_that_is_not_a_ledger_gives_a_clear_error(tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(NotALedger, match="not a SQLite database"):
        Ledger.open(bad)
    with pytest.raises(NotALedger, match="not a SQLite database"):
        Ledger.open(bad, owner=owner())


def test_a_certificate_for_another_key_cannot_start_a_ledger(tmp_path):
    theirs = owner()
    with pytest.raises(LedgerError, match="names another key"):
        Ledger.open(tmp_path / "l.db", owner=LedgerOwner(key=generate_key(),
                                                         certificate=theirs.certificate))


_DIGEST = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@settings(max_examples=50, deadline=None)
@given(st.lists(_DIGEST, max_size=5, unique=True), st.sets(st.sampled_from(
    ["home-1", "home-2", "home-3", "home-4"]), max_size=4), _DIGEST, st.booleans())
def test_a_quorum_record_gives_back_every_commitment_as_signed(digests, nodes, result, inline):
    listed = tuple(sorted(digests))
    signed = [sign("commit", Commitment(
        community="elm-street", interval=7, node=node, bid_digests=listed if inline else None,
        bid_set_digest=bid_set_digest(listed), result_hash=result, mechanism="uniform"),
        generate_key()) for node in nodes]
    record = json.loads(json.dumps(quorum_record(signed)))  # as a block stores it
    assert quorum_envelopes(record) == sorted(signed, key=lambda e: e.body["node"])


def test_a_ledger_is_written_only_by_the_node_and_key_it_names(tmp_path):
    path = tmp_path / "ledger.db"
    Ledger.open(path, owner=owner("home-1")).close()
    with pytest.raises(LedgerError, match=r"the ledger of node home-1 .*not of this node "
                                          r"\(home-2\)"):
        Ledger.open(path, owner=owner("home-2"))
    with pytest.raises(LedgerError, match="a new key starts a new ledger"):
        Ledger.open(path, owner=owner("home-1"))  # same node, another key
