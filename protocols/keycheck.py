"""Which 32-byte strings are acceptable Ed25519 public keys: the check every key entry point makes.

OpenSSL verifies a signature with any 32 bytes that decode to a curve point, including the eight
points of small order. With one of those as the public key, the signature (R = identity, S = 0)
verifies for *every* message: whoever gets such a key certified can sign anything in its name
(docs/reliability.md, "weak keys"). So a key is refused unless it is

- a canonical encoding: the y coordinate below p, and no sign bit on x = 0 (a second spelling of
  the same point would let one key have two names);
- a point on the curve;
- not one of the eight points of small order ([8]P = identity), the list libsodium's
  ``ge25519_has_small_order`` blocks (its non-canonical spellings fall under the first rule).

The on-curve test is RFC 8032's decoding (section 5.1.3) over GF(2^255 - 19), cached: a
community's roster is small and every message names a key.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["SMALL_ORDER_KEYS", "key_problem"]

_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P

#: The canonical encodings of the eight points of small order (orders 1, 2, 4, 4 and four of 8).
SMALL_ORDER_KEYS: tuple[str, ...] = (
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
)
_SMALL_ORDER = frozenset(SMALL_ORDER_KEYS)


def _encoding_problem(encoded: bytes) -> str | None:
    """The checks that need no field arithmetic: canonical spelling and the small-order list."""
    y = int.from_bytes(encoded, "little") & ((1 << 255) - 1)
    if y >= _P or (encoded[31] >> 7 and y in (1, _P - 1)):  # x = 0 exactly when y = +-1
        return "non-canonical"
    return "small-order" if encoded.hex() in _SMALL_ORDER else None


@lru_cache(maxsize=4096)
def _on_curve(encoded: bytes) -> bool:
    """Whether a canonical encoding's y has an x on the curve (RFC 8032, 5.1.3, steps 2-3)."""
    y = int.from_bytes(encoded, "little") & ((1 << 255) - 1)
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    return (v * x * x - u) % _P == 0 or (v * x * x + u) % _P == 0


def key_problem(key: bytes | str, *, curve: bool = True) -> str | None:
    """Why ``key`` (32 raw bytes, or 64 hex digits) is no acceptable Ed25519 public key, or None.

    Reasons, short slugs for counters and messages: "malformed" (not 32 bytes / 64 hex digits),
    "non-canonical", "small-order", "not-on-curve". ``curve=False`` skips the last, the one
    check that costs a field exponentiation: a signature check makes it anyway (OpenSSL refuses
    a point off the curve), so :func:`protocols.signing.verify` leaves it out.
    """
    if isinstance(key, str):
        try:
            key = bytes.fromhex(key)
        except ValueError:
            return "malformed"
    if len(key) != 32:
        return "malformed"
    problem = _encoding_problem(bytes(key))
    if problem is None and curve and not _on_curve(bytes(key)):
        return "not-on-curve"
    return problem
