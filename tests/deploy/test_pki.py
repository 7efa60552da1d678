"""The community PKI and the generated broker files, checked without a broker."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.cli import main
from gateway.installer.brokerconfig import revoke_client, write_broker_config
from gateway.installer.pki import CLIENT_DAYS, CommunityCa
from gateway.market.packetgate import MAX_PACKET_BYTES
from gateway.market.peerlink import PeerLink
from gateway.tls import PkiError, TlsFiles
from protocols.market.topics import SLOTS

NOW = dt.datetime(2030, 6, 1, 12, tzinfo=dt.UTC)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_certificates_chain_to_the_ca_with_the_right_names() -> None:
    ca = CommunityCa.create(community="oak-street", now=NOW)
    server = ca.issue_server(hostnames=["broker.oak.example", "10.0.0.5"], now=NOW)
    node = ca.issue_client(common_name="alice", now=NOW)
    for issued in (server, node):
        issued.certificate.verify_directly_issued_by(ca.certificate)
        cert = issued.certificate
        assert cert.not_valid_before_utc < NOW < cert.not_valid_after_utc
    assert cn(node.certificate) == "alice"
    san = server.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "broker.oak.example"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1", "::1", "10.0.0.5"}
    usage = node.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca and constraints.critical


@pytest.mark.parametrize("name", ["alice/x", "+", "#", "a%u", "Alice", "", "-x"])
def test_client_names_that_would_bend_the_acl_are_refused(name: str) -> None:
    ca = CommunityCa.create(community="oak-street", now=NOW)
    with pytest.raises(PkiError, match="client name"):
        ca.issue_client(common_name=name, now=NOW)


def test_bad_hostname_and_naive_time_are_refused() -> None:
    ca = CommunityCa.create(community="oak-street", now=NOW)
    with pytest.raises(PkiError, match="hostname"):
        ca.issue_server(hostnames=["not a host"], now=NOW)
    with pytest.raises(PkiError, match="timezone"):
        CommunityCa.create(community="oak-street", now=NOW.replace(tzinfo=None))


def test_written_keys_are_owner_only_and_rerun_keeps_the_ca(tmp_path: Path) -> None:
    files, written = write_broker_config(out=tmp_path, community="oak-street",
                                         nodes=["alice", "bob"], now=NOW, port=18883)
    for key in (files.ca_key, files.server.key, files.node("alice").key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.node("alice").cert.stat().st_mode) == 0o644
    ca_before = files.ca_cert.read_bytes()
    alice_before = files.node("alice").cert.read_bytes()

    files, written = write_broker_config(out=tmp_path, community="oak-street",
                                         nodes=["alice", "carol"], now=NOW, port=18883)
    assert files.ca_cert.read_bytes() == ca_before
    assert files.node("alice").cert.read_bytes() == alice_before
    assert files.node("carol").cert in written and files.node("alice").cert not in written
    load(files.node("carol").cert).verify_directly_issued_by(load(files.ca_cert))


def test_acl_and_config_say_what_the_broker_enforces(tmp_path: Path) -> None:
    files, _ = write_broker_config(out=tmp_path, community="oak-street", nodes=["alice"],
                                   now=NOW, port=18883, bridge_to=("site-a.example", 8883))
    acl = files.acl.read_text().splitlines()
    assert "pattern read gridpeer/oak-street/#" in acl
    assert "pattern write gridpeer/oak-street/bids/0/%u" in acl
    assert "pattern write gridpeer/oak-street/settle/15/%u" in acl
    assert "pattern write gridpeer/oak-street/presence/%u" in acl
    writes = [line for line in acl if line.startswith("pattern write")]
    assert len(writes) == 2 + 4 * SLOTS  # each slot named: no '+' for the interval
    assert not [line for line in writes if "%u" not in line or "+" in line]
    config = files.config.read_text().splitlines()
    for line in ("allow_anonymous false", "require_certificate true",
                 "use_identity_as_username true", "persistence true", "listener 18883",
                 f"acl_file {files.acl.resolve()}", f"crlfile {files.crl.resolve()}",
                 f"max_packet_size {MAX_PACKET_BYTES}", "max_queued_messages 20000"):
        assert line in config
    bridged = files.bridged_config.read_text().splitlines()
    assert "address site-a.example:8883" in bridged
    assert "topic gridpeer/oak-street/# both 1" in bridged
    assert cn(load(files.bridge.cert)) == "bridge.oak-street"


def test_gridpeer_community_broker_config_writes_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["community", "broker-config", "--community", "oak-street", "--out",
                 str(tmp_path), "--node", "alice", "--node", "bob",
                 "--hostname", "broker.local", "--port", "8884"]) == 0
    assert "mosquitto -c" in capsys.readouterr().out
    assert load(tmp_path / "nodes" / "bob.crt")
    assert "listener 8884" in (tmp_path / "mosquitto.conf").read_text()
    with pytest.raises(SystemExit):
        main(["community", "broker-config", "--community", "c", "--out", "x", "--node", "a",
              "--port", "99999"])
    assert "99999" in capsys.readouterr().err


def test_peerlink_refuses_a_scheme_that_disagrees_with_tls(tmp_path: Path) -> None:
    files, _ = write_broker_config(out=tmp_path, community="oak-street", nodes=["alice"],
                                   now=NOW)
    with pytest.raises(ValueError, match="needs tls"):
        PeerLink(broker_url="mqtts://127.0.0.1:8883", community="oak-street", node="alice")
    with pytest.raises(ValueError, match="use mqtts://"):
        PeerLink(broker_url="mqtt://127.0.0.1:1883", community="oak-street", node="alice",
                 tls=files.node("alice"))
    missing = TlsFiles(ca=files.ca_cert, cert=tmp_path / "nope.crt", key=tmp_path / "nope.key")
    with pytest.raises(PkiError, match="nope.crt"):
        PeerLink(broker_url="mqtts://127.0.0.1:8883", community="oak-street", node="alice",
                 tls=missing)


def test_a_revoked_node_stays_revoked_across_reruns_until_its_certificate_is_renewed(
    tmp_path: Path,
) -> None:
    files, _ = write_broker_config(out=tmp_path, community="oak-street", nodes=["alice", "bob"],
                                   now=NOW)
    assert "topic deny" not in files.acl.read_text()
    bob = load(files.node("bob").cert).serial_number
    revoke_client(root=tmp_path, community="oak-street", node="bob", now=NOW)
    crl = x509.load_pem_x509_crl(files.crl.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(bob) is not None
    assert crl.next_update_utc == load(files.ca_cert).not_valid_after_utc  # never goes stale
    assert "user bob\ntopic deny #" in files.acl.read_text()

    write_broker_config(out=tmp_path, community="oak-street", nodes=["alice", "bob", "carol"],
                        now=NOW)  # adding a home keeps the revocation
    assert "user bob\ntopic deny #" in files.acl.read_text()
    assert x509.load_pem_x509_crl(files.crl.read_bytes()).get_revoked_certificate_by_serial_number(
        bob) is not None

    files.node("bob").cert.unlink()  # renewing (or admitting bob again) issues a new one
    write_broker_config(out=tmp_path, community="oak-street", nodes=["bob"], now=NOW)
    assert "topic deny" not in files.acl.read_text()


def test_revoking_needs_the_community_and_the_node_of_that_broker(tmp_path: Path) -> None:
    write_broker_config(out=tmp_path, community="oak-street", nodes=["alice"], now=NOW)
    with pytest.raises(PkiError, match="not the CA of community 'elm-street'"):
        revoke_client(root=tmp_path, community="elm-street", node="alice", now=NOW)
    with pytest.raises(PkiError, match="nobody.crt: no such file"):
        revoke_client(root=tmp_path, community="oak-street", node="nobody", now=NOW)


def test_client_certificates_last_a_membership_year_and_a_month() -> None:
    ca = CommunityCa.create(community="oak-street", now=NOW)
    leaf = ca.issue_client(common_name="alice", now=NOW).certificate
    assert leaf.not_valid_after_utc - NOW == dt.timedelta(days=CLIENT_DAYS) == dt.timedelta(400)
