"""The community's TLS PKI: one CA, a broker (server) certificate, one client certificate per node.

This is transport security, separate from the Ed25519 membership certificates of the market: the
broker cannot check our signed envelopes, but it can check a TLS client certificate and, with
Mosquitto's ``use_identity_as_username``, use its Common Name as the MQTT username that the ACL's
``%u`` patterns match. So a node's client certificate carries its node id as CN, and the ACL then
lets it publish only under its own id (see :mod:`gateway.installer.brokerconfig`).

Keys are ECDSA P-256, not Ed25519: every TLS stack a community broker may run on (Mosquitto on
OpenSSL, EMQX and VerneMQ on Erlang's ssl, HiveMQ on Java) supports P-256 certificates, while
Ed25519 ones are still refused by some. Times are passed in, as everywhere in gridpeer, so tests
can issue certificates for any moment; ``not_valid_before`` is an hour early so a Pi whose clock is
a little behind still accepts a certificate made a minute ago.

A revoked node's client certificate goes on the CA's certificate revocation list
(:meth:`CommunityCa.revocation_list`), which the broker checks at every TLS handshake.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.tls import PkiError

CA_DAYS = 3650
SERVER_DAYS = 825
"""The broker's certificate: rewritten at every ``broker-config`` run, and one certificate the
installer controls, so the longest validity TLS clients still accept."""
CLIENT_DAYS = 400
"""A member's broker access: the default membership certificate's year plus a month to renew both
at one visit. A member who leaves without being revoked keeps broker access at most this long
(revocation cuts it at once: the CRL); 825 days would be more than two years of it."""
_SKEW = dt.timedelta(hours=1)
# A Common Name the ACL can substitute for %u: no '/', '+', '#' or '%', which would change the
# topic pattern. Node ids ([a-z0-9-]) are a subset; '.' is allowed so bridge identities such as
# "bridge.oak-street" can never be mistaken for a node.
_COMMON_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate with its private key, as issued by :class:`CommunityCa`."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, *, cert: Path, key: Path) -> None:
        """Write both as PEM; the key is created owner-only (mode 600) before any byte is in it."""
        write_private_key(key, self.key)
        _write_atomic(cert, self.certificate.public_bytes(serialization.Encoding.PEM), 0o644)


class CommunityCa:
    """The community's certificate authority: issues the broker's and the nodes' certificates."""

    def __init__(self, *, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        if certificate.public_key() != key.public_key():
            raise PkiError("CA certificate and key do not belong together")
        self.certificate = certificate
        self.key = key

    @classmethod
    def create(cls, *, community: str, now: dt.datetime, days: int = CA_DAYS) -> Self:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"gridpeer community {community}"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"gridpeer {community} CA"),
        ])
        certificate = (
            _builder(subject=name, issuer=name, public_key=key.public_key(), now=now, days=days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate=certificate, key=key)

    @classmethod
    def load(cls, *, cert: Path, key: Path) -> Self:
        try:
            certificate = x509.load_pem_x509_certificate(cert.read_bytes())
            private = serialization.load_pem_private_key(key.read_bytes(), password=None)
        except FileNotFoundError as exc:
            raise PkiError(f"{exc.filename}: no such file") from None
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise PkiError(f"{cert} / {key}: not a PEM certificate and key ({exc})") from None
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{key}: expected an EC private key")
        return cls(certificate=certificate, key=private)

    def write(self, *, cert: Path, key: Path) -> None:
        Issued(certificate=self.certificate, key=self.key).write(cert=cert, key=key)

    def names(self, community: str) -> bool:
        """Whether this is the CA :meth:`create` made for ``community`` (its subject says so)."""
        organizations = self.certificate.subject.get_attributes_for_oid(
            NameOID.ORGANIZATION_NAME)
        return [o.value for o in organizations] == [f"gridpeer community {community}"]

    def issue_server(
        self, *, hostnames: Sequence[str] = (), now: dt.datetime, days: int = SERVER_DAYS
    ) -> Issued:
        """The broker's certificate, valid for 127.0.0.1, ::1, localhost and ``hostnames``
        (IP addresses become IP SANs, anything else a DNS SAN), so clients verify the name they
        dialled."""
        names: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        for host in hostnames:
            name = _general_name(host)
            if name not in names:
                names.append(name)
        common = hostnames[0] if hostnames else "localhost"
        return self._issue(
            common_name=common, usage=ExtendedKeyUsageOID.SERVER_AUTH, now=now, days=days,
            alt_names=names,
        )

    def issue_client(self, *, common_name: str, now: dt.datetime, days: int = CLIENT_DAYS
                     ) -> Issued:
        """A client certificate whose CN becomes the MQTT username at the broker: a node id for
        a gateway, or a ``bridge.<community>`` style name for a bridge."""
        if not _COMMON_NAME.fullmatch(common_name):
            raise PkiError(
                f"client name {common_name!r} must match {_COMMON_NAME.pattern} "
                "(it becomes the broker username that the ACL patterns substitute)"
            )
        return self._issue(common_name=common_name, usage=ExtendedKeyUsageOID.CLIENT_AUTH,
                           now=now, days=days, alt_names=None)

    def _issue(
        self, *, common_name: str, usage: x509.ObjectIdentifier, now: dt.datetime, days: int,
        alt_names: list[x509.GeneralName] | None,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = (
            _builder(subject=subject, issuer=self.certificate.subject,
                     public_key=key.public_key(), now=now, days=days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
                critical=False,
            )
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names),
                                            critical=False)
        return Issued(certificate=builder.sign(self.key, hashes.SHA256()), key=key)


    def revocation_list(self, *, revoked: Mapping[int, dt.datetime], now: dt.datetime
                        ) -> x509.CertificateRevocationList:
        """A CRL naming each serial in ``revoked`` with its revocation time, valid until the CA
        itself expires.

        OpenSSL refuses every client certificate once the CRL it checks has passed its next
        update, and nothing re-fetches this one: it is a file on the broker, replaced when a node
        is revoked (and the broker reloaded). So its validity is the CA's, not days.
        """
        if now.tzinfo is None:
            raise PkiError("CRL times need a timezone-aware datetime")
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - _SKEW)
            .next_update(self.certificate.not_valid_after_utc)
        )
        for serial, when in sorted(revoked.items()):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
                .build())
        return builder.sign(self.key, hashes.SHA256())


def write_crl(path: Path, crl: x509.CertificateRevocationList) -> None:
    _write_atomic(path, crl.public_bytes(serialization.Encoding.PEM), 0o644)


def revoked_certificates(path: Path, ca: x509.Certificate) -> dict[int, dt.datetime]:
    """The serial numbers on the CRL in ``path`` with their revocation times, after checking
    that ``ca`` signed it."""
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except FileNotFoundError:
        raise PkiError(f"{path}: no such file") from None
    except ValueError as exc:
        raise PkiError(f"{path}: not a PEM certificate revocation list ({exc})") from None
    public_key = ca.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(
            public_key):
        raise PkiError(f"{path}: not signed by the community CA")
    return {entry.serial_number: entry.revocation_date_utc for entry in crl}


def certificate_serial(path: Path) -> int:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).serial_number
    except FileNotFoundError:
        raise PkiError(f"{path}: no such file") from None
    except ValueError as exc:
        raise PkiError(f"{path}: not a PEM certificate ({exc})") from None


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """PKCS#8 PEM, unencrypted (a service must start unattended), owner read/write only."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomic(path, pem, 0o600)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file created with ``mode``, then rename: a reader never sees half a
    file, and a key is never readable by others, not even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)  # the umask may have narrowed it; widen to exactly ``mode``
        f.write(data)
    os.replace(tmp, path)


def _builder(
    *, subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
    now: dt.datetime, days: int,
) -> x509.CertificateBuilder:
    if now.tzinfo is None:
        raise PkiError("certificate times need a timezone-aware datetime")
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(host):
        raise PkiError(f"hostname {host!r} is neither an IP address nor a DNS name")
    return x509.DNSName(host)
