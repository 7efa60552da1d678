"""Community membership as this gateway knows it: who may bid and commit, with which key.

Sans-I/O: certificates and revocations go in as parsed envelopes, the time as ``now_ms``. Both
arrive on ``roster/<node>`` (a retained revocation replaces the retained certificate on the broker,
so a gateway that joins later never sees the withdrawn one). Validity is decided at every lookup,
not when the certificate arrives, so a certificate that expires or is revoked mid-run stops
counting at that moment, and a message from that node is rejected with the precise reason
("expired", "revoked") rather than a generic "unknown-key". The authority's signature, which
cannot change, is verified once, when the certificate arrives: re-verifying it at every peer
message was most of a 100-agent soak's CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.messages import MembershipCertificate, Revocation, SignedEnvelope
from protocols.signing import (
    Rejected,
    Verified,
    certificate_standing,
    key_problem,
    verify,
)

# Reasons after which a certificate signed by the authority is still worth keeping: it may become
# valid later (not-yet-valid), or it explains why the node's messages are refused.
_KEEP = frozenset({"expired", "not-yet-valid", "revoked"})


@dataclass(frozen=True, slots=True)
class Member:
    """A node with a currently valid certificate."""

    node: str
    public_key: str
    bus: str
    import_limit_w: int
    export_limit_w: int


class Roster:
    """Certificates by node, revocations, and the check every peer message goes through."""

    def __init__(self, *, community: str, authority_key_hex: str) -> None:
        weak = key_problem(authority_key_hex)
        if weak is not None:  # the config refuses it first; this is the core's own guard
            raise ValueError(f"authority key is {weak}: no certificate could be trusted")
        self._community = community
        self._authority = authority_key_hex
        self._certs: dict[str, MembershipCertificate] = {}  # each signed by the authority
        self._members: dict[str, Member] = {}  # the same, as the member each admits
        self._signed: dict[str, SignedEnvelope] = {}  # the same, as the authority signed them
        self._revocations: list[Revocation] = []

    def offer(
        self, envelope: SignedEnvelope, *, node: str, now_ms: int
    ) -> Member | Revocation | Rejected:
        """Take a certificate or revocation published on ``roster/<node>``.

        Returns the member a valid certificate admits, the revocation taken, or why the message
        was refused (a certificate that fails only on time or revocation is still kept).
        """
        if envelope.kind == "revoke":
            return self._offer_revocation(envelope, node=node)
        if envelope.kind != "cert":
            return Rejected("wrong-kind")
        if envelope.signer != self._authority:
            return Rejected("not-authority")  # before the signature costs a check
        verified = verify(envelope, expected_kind="cert")
        if isinstance(verified, Rejected):
            return verified
        return self.admit(envelope, verified, node=node, now_ms=now_ms)

    def admit(self, envelope: SignedEnvelope, verified: Verified, *, node: str,
              now_ms: int) -> Member | Rejected:
        """Take a certificate whose authority signature is already verified (``verified``: by
        :meth:`offer`, or by :func:`~protocols.market.market.open_signed` as "cert" from
        :attr:`authority`): its key, its standing now, and whether it is newer than the one held."""
        cert = verified.body
        assert isinstance(cert, MembershipCertificate)  # verified as "cert"
        if verified.public_key_hex != self._authority:
            return Rejected("not-authority")
        weak = key_problem(cert.public_key)
        if weak is not None:
            return Rejected(f"bad-key:{weak}")
        refused = certificate_standing(cert, community=self._community, now_ms=now_ms,
                                       revocations=self._revocations)
        if refused is not None and refused.reason not in _KEEP:
            return refused
        return self._keep(envelope, cert, node, refused)

    @property
    def authority(self) -> str:
        """The community authority's key: the only signer of a certificate."""
        return self._authority

    def _keep(self, envelope: SignedEnvelope, cert: MembershipCertificate, node: str,
              checked: Rejected | None) -> Member | Rejected:
        """Hold a certificate the authority signed if it is ``node``'s and newer than the one
        held; the member it admits, or why not now (``checked``: kept, yet not valid now)."""
        if cert.node != node:
            return Rejected("node-mismatch")
        held = self._certs.get(node)
        if held is None or _newer(cert, held):
            self._certs[node] = cert
            self._members[node] = _member(cert)
            self._signed[node] = envelope
        return checked if isinstance(checked, Rejected) else _member(cert)

    def _offer_revocation(self, envelope: SignedEnvelope, *, node: str) -> Revocation | Rejected:
        """Revocations are kept whatever their time: one effective later must still apply then."""
        if envelope.signer != self._authority:
            return Rejected("not-authority")
        checked = verify(envelope, expected_kind="revoke")
        if isinstance(checked, Rejected):
            return checked
        revocation = checked.body
        assert isinstance(revocation, Revocation)  # guaranteed by expected_kind="revoke"
        if revocation.community != self._community:
            return Rejected("wrong-community")
        if revocation.node != node:
            return Rejected("node-mismatch")
        if revocation not in self._revocations:
            self._revocations.append(revocation)
        return revocation

    def check(self, *, node: str, signer: str, now_ms: int) -> Member | Rejected:
        """The member ``node`` if ``signer`` is its certified key and the certificate is valid now.

        "unknown-key" covers both an unknown node and a key that is not the node's certified one:
        either way the signer is nobody we know under that name.
        """
        cert = self._certs.get(node)
        if cert is None or cert.public_key != signer:
            return Rejected("unknown-key")
        refused = certificate_standing(cert, community=self._community, now_ms=now_ms,
                                       revocations=self._revocations)
        return self._members[node] if refused is None else refused

    def member(self, node: str, *, now_ms: int) -> Member | Rejected:
        """``node`` as a member now, under the key its held certificate names."""
        cert = self._certs.get(node)
        if cert is None:
            return Rejected("unknown-key")
        return self.check(node=node, signer=cert.public_key, now_ms=now_ms)

    def certificate(self, node: str) -> SignedEnvelope | None:
        """The certificate held for ``node`` as the authority signed it, valid now or not: the
        proof a ledger keeps that a commitment's signer was a member."""
        return self._signed.get(node)

    def bus(self, node: str) -> str:
        """The feeder bus on the certificate held for ``node`` ("" with none).

        No validity check: the caller asks about a node whose message it has just checked with
        :meth:`check`.
        """
        cert = self._certs.get(node)
        return "" if cert is None else cert.bus

    def active(self, now_ms: int) -> dict[str, Member]:
        """Every node whose certificate is valid at ``now_ms``."""
        members: dict[str, Member] = {}
        for node in self._certs:
            checked = self.member(node, now_ms=now_ms)
            if isinstance(checked, Member):
                members[node] = checked
        return members


def _newer(a: MembershipCertificate, b: MembershipCertificate) -> bool:
    return (a.valid_from_ms, a.valid_until_ms) > (b.valid_from_ms, b.valid_until_ms)


def _member(cert: MembershipCertificate) -> Member:
    return Member(
        node=cert.node,
        public_key=cert.public_key,
        bus=cert.bus,
        import_limit_w=cert.import_limit_w,
        export_limit_w=cert.export_limit_w,
    )
