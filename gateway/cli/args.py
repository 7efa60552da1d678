"""What every command group of the ``gridpeer`` CLI shares: the error shown as one line and the
argument types that refuse bad input at parse time (exit status 2, before anything runs)."""

from __future__ import annotations

import argparse


class UsageError(Exception):
    """The command line asked for something that cannot be done; shown without a traceback."""


def positive_float(text: str) -> float:
    """An argparse type for speeds and other strictly positive numbers."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def positive_int(text: str) -> int:
    """An argparse type for counts and steps that must be whole and strictly positive."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def public_key(text: str) -> str:
    """An Ed25519 public key as typed: 64 lowercase hex digits naming a point no forger can use
    (:func:`protocols.keycheck.key_problem`)."""
    from protocols.keycheck import key_problem

    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise argparse.ArgumentTypeError("expected 64 lowercase hex characters (an Ed25519 key)")
    weak = key_problem(text)
    if weak is not None:
        raise argparse.ArgumentTypeError(
            f"{text[:8]}...: {weak} Ed25519 point, not a usable public key (copy the key "
            "`gridpeer init` or `gridpeer community init` printed)")
    return text
