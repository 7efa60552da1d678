"""Ed25519 sign and verify throughput of ``protocols.signing`` on Bid messages.

Baseline: raw ``cryptography`` Ed25519 ``sign`` / ``verify`` of the same bytes our envelope
signs (``signed_bytes("bid", body)``: domain prefix + canonical JSON). The ratio is therefore the
cost of what the protocol adds around the curve operation: pydantic dump (sign) or canonical
re-encoding + schema validation (verify), hex encoding, and the envelope model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from bench._report import line, machine
from protocols.messages import Bid
from protocols.signing import Verified, generate_key, sign, signed_bytes, verify

DURATION_S = 2.0  # per measurement; 4 measurements x 2 rounds keep the script under ~20 s
BIDS = 256


def make_bids() -> list[Bid]:
    return [
        Bid(
            community="bench",
            interval=1_000 + i,
            node=f"node-{i % 64}",
            seq=i,
            side="buy" if i % 2 else "sell",
            energy_wh=100 + 37 * i,
            limit_price=80 + i % 220,
            created_ms=1_763_000_000_000 + i,
        )
        for i in range(BIDS)
    ]


def rate(fn: Callable[[Any], object], items: Sequence[Any]) -> float:
    """Operations per second of ``fn`` over ``items``, cycled for about DURATION_S."""
    done = 0
    t0 = time.perf_counter()
    deadline = t0 + DURATION_S
    while True:
        for item in items:
            fn(item)
        done += len(items)
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - t0)


def main() -> None:
    print(f"# bench_signing — {machine()}")
    key = generate_key()
    public = key.public_key()
    bids = make_bids()
    envelopes = [sign("bid", bid, key) for bid in bids]
    raw_messages = [signed_bytes("bid", bid.model_dump(mode="json")) for bid in bids]
    raw_pairs = [(m, key.sign(m)) for m in raw_messages]
    assert all(isinstance(verify(e, expected_kind="bid"), Verified) for e in envelopes)
    assert all(bytes.fromhex(e.sig) == s for e, (_, s) in zip(envelopes, raw_pairs, strict=True))

    def raw_verify(pair: tuple[bytes, bytes]) -> None:
        public.verify(pair[1], pair[0])

    results: dict[str, float] = {}
    for _round in range(2):  # interleave ours and baseline; keep the best of two rounds
        for name, fn, items in (
            ("sign", lambda b: sign("bid", b, key), bids),
            ("raw sign", key.sign, raw_messages),
            ("verify", lambda e: verify(e, expected_kind="bid"), envelopes),
            ("raw verify", raw_verify, raw_pairs),
        ):
            results[name] = max(results.get(name, 0.0), rate(fn, items))
    print(
        line(
            "protocols.signing.sign(Bid)",
            results["sign"],
            "ops/s",
            "cryptography Ed25519 sign",
            results["raw sign"],
            lower_is_better=False,
        )
    )
    print(
        line(
            "protocols.signing.verify(Bid)",
            results["verify"],
            "ops/s",
            "cryptography Ed25519 verify",
            results["raw verify"],
            lower_is_better=False,
        )
    )
    for name in ("sign", "verify"):
        ours, raw = results[name], results[f"raw {name}"]
        print(
            f"  {name}: {1e6 / ours:.1f} µs/op, of which Ed25519 {1e6 / raw:.1f} µs "
            f"and envelope/schema {1e6 / ours - 1e6 / raw:.1f} µs"
        )


if __name__ == "__main__":
    main()
