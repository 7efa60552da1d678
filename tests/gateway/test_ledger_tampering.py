"""`gridpeer ledger verify` against every way of rewriting a ledger, on ledgers the closing path
wrote (market agents on a broker, :class:`IntervalCloser`, tagged meter readings).

Each tampering gets its own message and exit status: 1 when a check fails, 3 when the file is no
ledger this gridpeer can check; 0 only when every check it made passed, and it names the ones it
could not make.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli import main
from gateway.cli.ledger import VERIFY_FAILED, VERIFY_INTACT, VERIFY_NOT_A_LEDGER
from gateway.identity import save_envelope
from gateway.ledger import Ledger, LedgerError, NotALedger
from protocols.ledger import Block, quorum_envelopes, quorum_record, sign_block
from protocols.messages import Commitment, Settlement
from protocols.signing import generate_key, private_key_to_pem, sign
from tests.gateway.ledger_street import LedgerHome, LedgerStreet, build_street
from tests.market.community import COMMUNITY


@pytest.fixture(scope="module")
def street(tmp_path_factory: pytest.TempPathFactory) -> LedgerStreet:
    return build_street(tmp_path_factory.mktemp("street"))


@pytest.fixture
def alice(street: LedgerStreet) -> LedgerHome:
    return street.homes["alice"]


def verify(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    try:
        code = main(["ledger", "verify", *map(str, argv)])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def as_alice(home: LedgerHome) -> list[str]:
    return ["--node", home.node, "--public-key", home.public_key]


def rewrite(path: Path, height: int, edit: Callable[[dict[str, Any]], None], *,
            key: Ed25519PrivateKey | None = None) -> None:
    """Edit block ``height`` and rehash the chain from it, as a forger would: the stored hashes
    and every later ``prev_hash`` made consistent again; with ``key``, every block re-signed."""
    db = sqlite3.connect(path)
    rows = db.execute("SELECT height, block, sig FROM blocks ORDER BY height").fetchall()
    prev: Block | None = None
    for row_height, text, sig in rows:
        data = json.loads(text)
        if row_height == height:
            edit(data)
        if prev is not None:
            data["prev_hash"] = prev.digest()
        block = Block.model_validate(data)
        db.execute("UPDATE blocks SET block = ?, hash = ?, sig = ? WHERE height = ?",
                   (block.model_dump_json(), block.digest(),
                    sig if key is None else sign_block(block, key), row_height))
        prev = block
    db.commit()
    db.close()


def blocks_of(path: Path) -> list[Block]:
    with Ledger.open(path) as ledger:
        return [block for block, _ in ledger.blocks()]


def witnessed(witness: Path, node: str) -> list[int]:
    """Intervals of ``node``'s signed settlements the ``witness`` ledger holds."""
    return sorted(peer["body"]["interval"] for block in blocks_of(witness)
                  for peer in block.content.get("peer_settlements", [])
                  if peer["body"]["node"] == node)


def test_a_ledger_the_closing_path_wrote_verifies_in_every_check(street, alice, capsys):
    bob, carol = street.homes["bob"].ledger, street.homes["carol"].ledger
    code, out, err = verify(capsys, alice.ledger, *as_alice(alice), "--against", bob,
                            "--against", carol)
    assert code == VERIFY_INTACT, err
    assert "intact in every check made" in out and "not checked" not in out
    assert any(b.status == "agreed" and b.content["quorum"]["signed"] for b in
               blocks_of(alice.ledger))
    code, out, _ = verify(capsys, alice.ledger)
    assert code == VERIFY_INTACT
    assert "not checked: binding, tail" in out


def test_an_edit_followed_by_a_rehash_is_caught_by_the_block_signatures(alice, tmp_path, capsys):
    forged = alice.copy_to(tmp_path)

    def richer(data: dict[str, Any]) -> None:
        data["content"]["outcome"]["money"] -= 1_000_000

    rewrite(forged, 1, richer)
    code, _, err = verify(capsys, forged)
    assert code == VERIFY_FAILED
    assert "block 1 (interval" in err and "not signed by the node's key" in err
    assert "stored hash" not in err and "prev_hash" not in err  # the rehash itself is consistent


def test_the_key_holder_cannot_rewrite_an_agreed_result_or_its_money(alice, tmp_path, capsys):
    """Whoever holds the node's key can re-sign its blocks, but not the quorum's commitments nor
    the settlement its neighbours hold."""
    cases: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
        "result": (lambda d: d["content"].update(result_hash="ab" * 32),
                   "commitment is to another result than the block's"),
        "quorum": (lambda d: d["content"].pop("quorum"),
                   "agreed without the quorum's signed commitments"),
        "committers": (lambda d: d["content"].update(committed_by=["alice", "bob", "carol",
                                                                    "dave"]),
                       "is not the set of members whose signed commitments it carries"),
        "money": (lambda d: d["content"]["outcome"].update(money=-10**9),
                  "the outcome's figures differ from the signed settlement's"),
    }
    for name, (edit, message) in cases.items():
        forged = alice.copy_to(tmp_path / name)
        rewrite(forged, 1, edit, key=alice.key)
        code, _, err = verify(capsys, forged)
        assert code == VERIFY_FAILED and message in err, (name, err)
        assert "not signed by the node's key" not in err


def test_a_re_signed_settlement_is_caught_against_the_neighbour_holding_the_original(
        street, alice, tmp_path, capsys):
    bob = street.homes["bob"].ledger
    k = witnessed(bob, "alice")[0]
    height = next(b.height for b in blocks_of(alice.ledger) if b.interval == k)

    def paid_more(data: dict[str, Any]) -> None:
        body = Settlement.model_validate(data["content"]["settlement"]["body"])
        richer = body.model_copy(update={"money": body.money - 500_000})
        data["content"]["settlement"] = sign("settle", richer, alice.key).model_dump()
        data["content"]["outcome"]["money"] = richer.money

    forged = alice.copy_to(tmp_path)
    rewrite(forged, height, paid_more, key=alice.key)
    code, out, _ = verify(capsys, forged)
    assert code == VERIFY_INTACT  # consistent in itself: only a second witness can tell
    code, _, err = verify(capsys, forged, "--against", bob)
    assert code == VERIFY_FAILED
    assert (f"interval {k}: the block's settlement differs from the one this node signed and "
            f"{bob} holds") in err


def test_an_invented_quorum_is_caught_against_a_member_it_names(street, alice, tmp_path,
                                                                 capsys):
    """The key holder signs commitments to a result of its own in its neighbours' names, with
    keys it made up: no certificate the authority signed gives them those keys, and the
    neighbour's own ledger names its real one."""
    block = next(b for b in blocks_of(alice.ledger)
                 if b.status == "agreed" and set(b.content["committed_by"]) - {"alice"})
    neighbour = min(set(block.content["committed_by"]) - {"alice"})

    def invent(data: dict[str, Any]) -> None:
        content = data["content"]
        content["result_hash"] = "ab" * 32
        forged = []
        for envelope in quorum_envelopes(content["quorum"]):
            body = Commitment.model_validate_json(json.dumps(envelope.body))
            signer = alice.key if body.node == "alice" else generate_key()
            forged.append(sign("commit", body.model_copy(update={"result_hash": "ab" * 32}),
                               signer))
        content["quorum"] = quorum_record(forged)

    forged = alice.copy_to(tmp_path)
    rewrite(forged, block.height, invent, key=alice.key)
    code, _, err = verify(capsys, forged)
    assert code == VERIFY_FAILED
    assert (f"block {block.height} (interval {block.interval}): {neighbour}'s commitment is "
            f"signed by a key no certificate in the ledger gives {neighbour}") in err
    code, _, err = verify(capsys, forged, "--against", street.homes[neighbour].ledger)
    assert code == VERIFY_FAILED
    assert (f"interval {block.interval}: the commitment in {neighbour}'s name is not signed by "
            f"{neighbour}'s key") in err


def test_cutting_off_the_last_blocks_is_caught_against_a_neighbour(street, alice, tmp_path,
                                                                   capsys):
    bob = street.homes["bob"].ledger
    cut_from = witnessed(bob, "alice")[-1]
    kept = [b.interval for b in blocks_of(alice.ledger) if b.interval < cut_from]
    forged = alice.copy_to(tmp_path)
    with sqlite3.connect(forged) as db:
        db.execute("DELETE FROM blocks WHERE interval >= ?", (cut_from,))
    db.close()
    code, out, err = verify(capsys, forged)
    assert code == VERIFY_INTACT, err  # a shorter chain is still a chain
    assert "not checked tail: a cut-off tail was not looked for" in out
    assert "not checked: binding, tail" in out
    code, _, err = verify(capsys, forged, "--against", bob)
    assert code == VERIFY_FAILED
    assert (f"tail cut off: {bob} holds this node's signed settlements of intervals {cut_from}"
            in err), err
    assert f"after the ledger's last block (interval {kept[-1]})" in err


def test_every_block_deleted_is_caught_against_a_neighbour(street, alice, tmp_path, capsys):
    forged = alice.copy_to(tmp_path)
    with sqlite3.connect(forged) as db:
        db.execute("DELETE FROM blocks")
    db.close()
    code, _, err = verify(capsys, forged, "--against", street.homes["carol"].ledger)
    assert code == VERIFY_FAILED and "after the ledger's end (it has no blocks)" in err


def test_a_ledger_truncated_to_zero_bytes_is_caught_and_the_gateway_will_not_write_it(
        alice, tmp_path, capsys):
    forged = alice.copy_to(tmp_path)
    forged.write_bytes(b"")
    code, out, err = verify(capsys, forged)
    assert code == VERIFY_FAILED and "empty (0 bytes)" in err and "intact" not in out
    with pytest.raises(LedgerError, match="empty"):
        Ledger.open(forged, owner=alice.owner())
    assert forged.stat().st_size == 0


def _config(home: LedgerHome, street: LedgerStreet, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "node.key").write_bytes(private_key_to_pem(home.key))
    (folder / "node.key").chmod(0o600)
    save_envelope(folder / "node.cert", home.certificate)
    config = folder / "gridpeer.toml"
    config.write_text(f'node = "{home.node}"\nkey_file = "node.key"\n'
                      f'certificate_file = "node.cert"\nstate_dir = "state"\n'
                      f'[market]\ncommunity = "{COMMUNITY}"\n'
                      f'authority_key = "{street.authority_hex}"\n')
    return config


def test_another_homes_ledger_in_its_place_is_caught(street, alice, tmp_path, capsys):
    config = _config(alice, street, tmp_path / "etc")
    swapped = tmp_path / "state" / "ledger.db"
    swapped.parent.mkdir()
    shutil.copyfile(street.homes["bob"].ledger, swapped)
    code, _, err = verify(capsys, swapped, "--config", config)
    assert code == VERIFY_FAILED
    assert "the ledger belongs to node bob, not alice" in err
    assert f"the ledger belongs to key {street.homes['bob'].public_key}, not" in err
    with pytest.raises(LedgerError, match=r"the ledger of node bob .*not of this node \(alice\)"):
        Ledger.open(swapped, owner=alice.owner())
    shutil.copyfile(alice.ledger, swapped)
    assert verify(capsys, swapped, "--config", config)[0] == VERIFY_INTACT


def _run_cli(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *map(str, argv)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_foreign_sqlite_file_is_refused_and_left_as_it_was(tmp_path):
    foreign = tmp_path / "notes.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
        db.execute("INSERT INTO notes VALUES ('hello')")
    db.close()
    before = foreign.read_bytes()
    done = _run_cli("ledger", "verify", foreign)
    assert done.returncode == VERIFY_NOT_A_LEDGER
    assert "not a gridpeer ledger (a SQLite database with tables: notes)" in done.stderr
    assert "Traceback" not in done.stderr and "intact" not in done.stdout
    assert foreign.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]  # no -wal, no -shm
    with sqlite3.connect(foreign) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    db.close()
    not_sqlite = tmp_path / "photo.jpg"
    not_sqlite.write_bytes(b"\xff\xd8\xff\xe0" + b"JFIF" * 500)
    done = _run_cli("ledger", "verify", not_sqlite)
    assert done.returncode == VERIFY_NOT_A_LEDGER
    assert "not a gridpeer ledger (not a SQLite database)" in done.stderr
    assert "Traceback" not in done.stderr


def _old_format(path: Path) -> None:
    """A ledger as gridpeer wrote it before signed blocks (format 1)."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS blocks (height INTEGER PRIMARY KEY, interval "
                   "INTEGER NOT NULL UNIQUE, hash TEXT NOT NULL UNIQUE, block TEXT NOT NULL)")
        block = Block(height=0, interval=7, status="abstained", prev_hash="0" * 64,
                      content={"reason": "no-quorum", "outcome": {"money": 12}})
        db.execute("INSERT INTO blocks VALUES (0, 7, ?, ?)",
                   (block.digest(), block.model_dump_json()))
    db.close()


def test_an_old_format_ledger_gets_a_clear_message_not_a_traceback(alice, tmp_path, capsys):
    old = tmp_path / "ledger.db"
    _old_format(old)
    code, _, err = verify(capsys, old)
    assert code == VERIFY_NOT_A_LEDGER and "a ledger of the old format (unsigned blocks" in err
    assert main(["ledger", "export", "--csv", str(old)]) == 0
    assert ",12," in capsys.readouterr().out
    with pytest.raises(NotALedger, match="old format.*move it aside"):
        Ledger.open(old, owner=alice.owner())


def test_deleted_member_certificates_are_caught(alice, tmp_path, capsys):
    forged = alice.copy_to(tmp_path)
    with sqlite3.connect(forged) as db:
        db.execute("DELETE FROM certificates")
    db.close()
    code, _, err = verify(capsys, forged)
    assert code == VERIFY_FAILED and "signed by a key no certificate in the ledger gives" in err


def test_a_deleted_header_or_block_is_caught(alice, tmp_path, capsys):
    no_header = alice.copy_to(tmp_path / "header")
    with sqlite3.connect(no_header) as db:
        db.execute("DELETE FROM header")
    db.close()
    code, _, err = verify(capsys, no_header)
    assert code == VERIFY_FAILED and "header: missing" in err
    gap = alice.copy_to(tmp_path / "gap")
    with sqlite3.connect(gap) as db:
        db.execute("DELETE FROM blocks WHERE height = 1")
    db.close()
    code, _, err = verify(capsys, gap)
    assert code == VERIFY_FAILED
    assert "block 2: expected height 1" in err and "block 2: prev_hash does not match" in err


_COLUMNS = {"blocks": ("block", "hash", "sig", "height", "interval"), "header": ("header", "sig"),
            "certificates": ("certificate",)}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_field_edit_is_caught(alice, tmp_path, data):
    table = data.draw(st.sampled_from(sorted(_COLUMNS)))
    column = data.draw(st.sampled_from(_COLUMNS[table]))
    forged = alice.copy_to(tmp_path / "edit")
    with sqlite3.connect(forged) as db:
        rowids = [r for (r,) in db.execute(f"SELECT rowid FROM {table}")]
        rowid = data.draw(st.sampled_from(rowids))
        (value,) = db.execute(f"SELECT {column} FROM {table} WHERE rowid = ?",
                              (rowid,)).fetchone()
        if isinstance(value, int):
            edited: object = value + data.draw(st.integers(-3, 3).filter(bool))
        else:
            at = data.draw(st.integers(0, len(value) - 1))
            char = data.draw(st.characters(codec="utf-8").filter(lambda c: c != value[at]))
            edited = value[:at] + char + value[at + 1:]
        try:
            db.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (edited, rowid))
        except sqlite3.IntegrityError:
            return  # the file's own constraints refuse it: nothing was changed
    db.close()
    with Ledger.open(forged) as ledger:
        assert ledger.verify(), (table, column, rowid)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_byte_of_a_block_changed_in_the_file_is_caught(alice, tmp_path, data):
    forged = alice.copy_to(tmp_path / "byte")
    raw = bytearray(forged.read_bytes())
    block = data.draw(st.sampled_from(blocks_of(forged)))
    stored = block.model_dump_json().encode()[:200]  # within the row's first page
    start = raw.find(stored)
    assert start >= 0 and raw.find(stored, start + 1) < 0
    at = start + data.draw(st.integers(0, len(stored) - 1))
    raw[at] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[at]))
    forged.write_bytes(bytes(raw))
    try:
        with Ledger.open(forged) as ledger:
            assert ledger.verify()
    except LedgerError:
        pass  # the file no longer reads as a ledger: refused, which is caught too
