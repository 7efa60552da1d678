"""Tagged metering: the firmware's tags (CPython and real MicroPython, byte for byte) verify in
protocols/metering.py; altered, foreign-key and replayed readings do not."""

import hashlib
import hmac
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware import metering
from protocols.metering import (
    RejectedReading,
    VerifiedReading,
    reading_message,
    reading_tag,
    verify_reading,
)
from tests._require import require

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
BRIDGE = Path(__file__).with_name("repl_bridge.mjs")
KEY = bytes(range(32))
UINT64 = st.integers(0, 2**64 - 1)
SEQ = st.integers(0, 2**32 - 2)
DEVICE = st.text("abcXYZ019._-", min_size=1, max_size=32)


def run_micropython(tmp_path: Path, script: str, root: Path = ROOT) -> list[str]:
    """Run ``script`` on the WebAssembly port with ``root``'s firmware/ on its filesystem; its
    output lines."""
    node = shutil.which("node")
    require(node is not None, "node is not installed")
    require((PACKAGE / "micropython.mjs").exists(), "run `npm install` for the MicroPython port")
    path = tmp_path / "script.py"
    path.write_text(script)
    run = subprocess.run([node, str(BRIDGE), str(root), "run", str(path)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


def test_golden_vector() -> None:
    """Pins the message layout: change it and every provisioned gateway rejects every reading."""
    counter = metering.TaggedCounter(KEY, "home7-meter", seq=41)
    tag = counter.update(123456, 7890)
    assert counter.seq == 42
    assert tag.hex() == "d35b759f3662839027105373604aedf304ac82ed5e1917de0b7b24699602f63b"
    assert reading_message("home7-meter", 42, 123456, 7890) == (
        b"gridpeer/meter/1\nhome7-meter\n" + bytes.fromhex(
            "0000002a" "000000000001e240" "0000000000001ed2"))
    assert reading_tag(KEY, "home7-meter", 42, 123456, 7890) == tag


@given(key=st.binary(min_size=0, max_size=200), msg=st.binary(max_size=300))
def test_hand_written_hmac_is_rfc_2104(key: bytes, msg: bytes) -> None:
    assert metering.hmac_sha256(key, msg) == hmac.digest(key, msg, hashlib.sha256)


@given(key=st.binary(min_size=16, max_size=64), device=DEVICE, seq=SEQ, imp=UINT64, exp=UINT64)
def test_round_trip_verifies(key: bytes, device: str, seq: int, imp: int, exp: int) -> None:
    counter = metering.TaggedCounter(key, device, seq=seq)
    tag = counter.update(imp, exp)
    assert verify_reading(key, device, seq + 1, imp, exp, tag.hex(), seq) == VerifiedReading(
        device, seq + 1, imp, exp)
    assert verify_reading(key, device, seq + 1, imp, exp, tag.hex(), None) == VerifiedReading(
        device, seq + 1, imp, exp)


@given(imp=UINT64, exp=UINT64, delta=st.integers(1, 1000))
def test_altered_reading_fails(imp: int, exp: int, delta: int) -> None:
    tag = metering.TaggedCounter(KEY, "m", seq=9).update(imp, exp).hex()
    other_imp = (imp + delta) % 2**64
    assert verify_reading(KEY, "m", 10, other_imp, exp, tag, 9) == RejectedReading("bad-tag")
    other_exp = (exp + delta) % 2**64
    assert verify_reading(KEY, "m", 10, imp, other_exp, tag, 9) == RejectedReading("bad-tag")
    assert verify_reading(KEY, "m", 10 + delta, imp, exp, tag, 9) == RejectedReading("bad-tag")
    assert verify_reading(KEY, "m2", 10, imp, exp, tag, 9) == RejectedReading("bad-tag")
    assert verify_reading(bytes(32), "m", 10, imp, exp, tag, 9) == RejectedReading("bad-tag")


def test_replayed_reading_fails() -> None:
    counter = metering.TaggedCounter(KEY, "m")
    old = (counter.seq + 1, 100, 5, counter.update(100, 5).hex())
    new = (counter.seq + 1, 120, 5, counter.update(120, 5).hex())
    assert isinstance(verify_reading(KEY, "m", *new, last_seq=None), VerifiedReading)
    assert verify_reading(KEY, "m", *old, last_seq=new[0]) == RejectedReading("replayed")
    assert verify_reading(KEY, "m", *new, last_seq=new[0]) == RejectedReading("replayed")


@pytest.mark.parametrize("seq, imp, tag", [
    (-1, 0, "00" * 32), (2**32, 0, "00" * 32), (1, 2**64, "00" * 32),
    (1, 0, "zz" * 32), (1, 0, "00" * 31)])
def test_malformed_readings(seq: int, imp: int, tag: str) -> None:
    assert verify_reading(KEY, "m", seq, imp, 0, tag, None) == RejectedReading("malformed")


def test_sequence_survives_a_reboot(tmp_path: Path) -> None:
    path = str(tmp_path / "seq")
    assert metering.load_seq(path) == 0
    saved = []

    def reserve(upto: int) -> None:
        saved.append(upto)
        metering.save_seq(path, upto)

    counter = metering.TaggedCounter(KEY, "m", seq=metering.load_seq(path), reserve=reserve,
                                     block=10)
    for i in range(12):
        counter.update(i, 0)
    assert saved == [10, 20] and counter.seq == 12
    rebooted = metering.TaggedCounter(KEY, "m", seq=metering.load_seq(path), block=10)
    rebooted.update(12, 0)
    assert rebooted.seq == 21  # above anything the first boot may have published
    (tmp_path / "seq").write_text("garbage")
    assert metering.load_seq(path) == 0


def test_bad_inputs_raise_our_error() -> None:
    with pytest.raises(metering.MeteringError, match="at least 16 bytes"):
        metering.TaggedCounter(b"short", "m")
    with pytest.raises(metering.MeteringError, match="uint64"):
        metering.TaggedCounter(KEY, "m").update(-1, 0)
    with pytest.raises(metering.MeteringError, match="out of range"):
        metering.TaggedCounter(KEY, "m", seq=2**32 - 1)


def test_counter_exhaustion() -> None:
    counter = metering.TaggedCounter(KEY, "m", seq=2**32 - 2)
    counter.update(0, 0)
    with pytest.raises(metering.MeteringError, match="exhausted"):
        counter.update(0, 0)


READINGS = [("home7-meter", KEY.hex(), 0, 0, 0), ("m", "ab" * 16, 41, 123456, 7890),
            ("x" * 32, "cd" * 64, 2**32 - 2, 2**64 - 1, 2**63 + 5),
            ("pv.roof_1", "01" * 70, 7, 2**40 + 3, 1)]


def test_micropython_tags_match_cpython_byte_for_byte(tmp_path: Path) -> None:
    script = "from firmware import metering\n"
    for device, key_hex, seq, imp, exp in READINGS:
        script += (f"c = metering.TaggedCounter(bytes.fromhex('{key_hex}'), '{device}', "
                   f"seq={seq})\nprint(c.update({imp}, {exp}).hex(), c.seq)\n")
    script += "print(metering.hmac_sha256(b'k' * 100, b'msg').hex())\n"
    lines = run_micropython(tmp_path, script)
    expected = []
    for device, key_hex, seq, imp, exp in READINGS:
        tag = metering.TaggedCounter(bytes.fromhex(key_hex), device, seq=seq).update(imp, exp)
        assert tag == reading_tag(bytes.fromhex(key_hex), device, seq + 1, imp, exp)
        expected.append(f"{tag.hex()} {seq + 1}")
    expected.append(hmac.digest(b"k" * 100, b"msg", hashlib.sha256).hex())
    assert lines == expected
