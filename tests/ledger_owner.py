"""A ledger owner for tests that need a ledger to write to: a node key and its certificate from a
throwaway community authority (every block a ledger holds is signed by its owner)."""

from __future__ import annotations

from gateway.ledger import LedgerOwner
from protocols.messages import MembershipCertificate
from protocols.signing import generate_key, public_key_hex, sign

_AUTHORITY = generate_key()


def make_owner(node: str = "home-1", *, community: str = "elm-street") -> LedgerOwner:
    key = generate_key()
    cert = MembershipCertificate(community=community, node=node, public_key=public_key_hex(key),
                                 bus="b1", import_limit_w=1, export_limit_w=1, valid_from_ms=0,
                                 valid_until_ms=10**13)
    return LedgerOwner(key=key, certificate=sign("cert", cert, _AUTHORITY))
