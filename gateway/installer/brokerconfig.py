"""A community broker's Mosquitto configuration: TLS with client certificates, per-node ACL, bridge.

The broker only relays, but it is the one place that can stop a node from speaking for another:
every payload is signed, yet a forged retained message would still cost every gateway a
verification. So the listener requires a client certificate from the community CA, takes its CN
as the username (``use_identity_as_username``), and the ACL lets user ``X`` publish only on
``roster/X``, ``presence/X`` and ``{bids,commit,bidset,settle}/<slot>/X`` while reading the whole
community; only the authority's user (``authority.<community>``) writes ``revoked/<node>``. The
slots are listed one by one (``topics.SLOTS`` per kind), never as ``+``: that is what bounds the
retained messages one member can keep alive, and with them a reconnecting gateway's burst. The
ACL is made of ``pattern`` lines with ``%u``, so it names no member: admitting a home needs a
client certificate, not a broker reload.

A revoked member (:func:`revoke_client`) is shut out twice: its certificate goes on the CRL the
listener checks (its next TLS handshake fails) and its username gets a ``deny`` on everything
(a connection it already had can no longer publish or receive). Mosquitto re-reads both on
SIGHUP (``systemctl reload mosquitto``).

The limits (:func:`render_limits`) come from the protocol: no packet larger than its largest
message, and queues that hold a reconnecting gateway's whole burst of retained messages.

A second site runs the same listener and ACL plus a bridge that carries ``gridpeer/<community>/#``
both ways to the first; the bridge has its own client certificate whose CN
(``bridge.<community>``) contains a dot, so no node id can ever claim the bridge's rights.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.installer.pki import (
    CommunityCa,
    certificate_serial,
    revoked_certificates,
    write_crl,
)
from gateway.market.packetgate import MAX_PACKET_BYTES
from gateway.tls import PkiError, TlsFiles
from protocols.market import topics

DEFAULT_PORT = 8883
MAX_INFLIGHT_MESSAGES = 100
"""QoS 1 messages sent to one client and not yet acknowledged. A reconnect's burst goes out 100
per round trip (1,000 a second on a 100 ms uplink), and a client that stops reading holds at most
this many in the broker's socket buffers; 0 (no limit) would let it hold everything."""
MAX_QUEUED_MESSAGES = 20_000
"""Messages queued for one client beyond those in flight, the rest dropped. A gateway that
(re)connects is sent every retained message of the community at once: each member has at most
2 + 4 x SLOTS = 66 (the slot ring), honest ones about 15, so 20,000 hold the burst of a
300-member community in which every member filled every slot. Mosquitto's default, 1,000, drops
part of the burst of a 70-home community."""
MAX_QUEUED_BYTES = 64 * 1024 * 1024
"""The same queue in bytes: what one client that subscribes and stops reading can make the broker
keep. A member filling all its slots with the largest messages adds about 11 MB to a burst."""


def bridge_identity(community: str) -> str:
    """The CN of the bridge's client certificate (and its broker username)."""
    return f"bridge.{topics.check_id('community', community)}"


def authority_identity(community: str) -> str:
    """The CN the installer publishes revocations under (``gridpeer community
    publish-revocation``); like the bridge's, it has a dot, so no node id can claim it."""
    return f"authority.{topics.check_id('community', community)}"


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """Where :func:`write_broker_config` puts each file under one folder."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """Needed only to issue certificates: keep it offline once the nodes have theirs."""
        return self.root / "ca.key"

    @property
    def server(self) -> TlsFiles:
        return TlsFiles(ca=self.ca_cert, cert=self.root / "server.crt",
                        key=self.root / "server.key")

    def node(self, node: str) -> TlsFiles:
        """What to copy to node ``node``'s gateway for ``mqtts://``."""
        folder = self.root / "nodes"
        return TlsFiles(ca=self.ca_cert, cert=folder / f"{node}.crt", key=folder / f"{node}.key")

    @property
    def bridge(self) -> TlsFiles:
        return TlsFiles(ca=self.ca_cert, cert=self.root / "bridge.crt",
                        key=self.root / "bridge.key")

    @property
    def authority(self) -> TlsFiles:
        """The installer's client files for publishing revocations: keep them with the
        authority key, not on any gateway."""
        return TlsFiles(ca=self.ca_cert, cert=self.root / "authority.crt",
                        key=self.root / "authority.key")

    @property
    def acl(self) -> Path:
        return self.root / "acl"

    @property
    def crl(self) -> Path:
        """The CA's revocation list, which the listener checks at every TLS handshake."""
        return self.root / "crl.pem"

    @property
    def config(self) -> Path:
        return self.root / "mosquitto.conf"

    @property
    def bridged_config(self) -> Path:
        """The second site's broker: the same listener and ACL, plus the bridge."""
        return self.root / "mosquitto-bridge.conf"


@dataclass(frozen=True, slots=True)
class Bridge:
    """A bridge from this broker to the community's main broker at ``host:port``."""

    community: str
    host: str
    port: int
    tls: TlsFiles


def _own_topics() -> list[str]:
    """What user ``%u`` may write: its roster and presence, and each slot of each per-interval
    kind by number (``+`` would let it retain a message for every interval there is)."""
    single = [f"{kind}/%u" for kind in (topics.Kind.ROSTER, topics.Kind.PRESENCE)]
    slotted = [f"{kind}/{slot}/%u" for kind in topics.Kind if kind in topics.PER_INTERVAL
               for slot in range(topics.SLOTS)]
    return single + slotted


def render_acl(*, community: str, revoked: Iterable[str] = ()) -> str:
    """Each user reads the community and writes only under its own id; the bridge user, if one
    connects, carries everything (it relays other brokers' nodes, already checked there); a
    revoked user is denied everything (deny lines come before any grant in Mosquitto)."""
    base = f"{topics.ROOT}/{topics.check_id('community', community)}"
    lines = [
        f"# gridpeer community {community}: the username is the CN of the client certificate.",
        "# Patterns apply to every user: read the whole community, write only under one's own id,",
        f"# and per-interval messages only on slots 0-{topics.SLOTS - 1} (interval mod "
        f"{topics.SLOTS}).",
        f"pattern read {base}/#",
        *(f"pattern write {base}/{suffix}" for suffix in _own_topics()),
        "",
        "# The community authority alone publishes revocations (retained, under revoked/).",
        f"user {authority_identity(community)}",
        f"topic write {base}/{topics.Kind.REVOKED}/+",
        "",
        "# The bridge from a second site relays that site's nodes (its broker checked them).",
        f"user {bridge_identity(community)}",
        f"topic readwrite {base}/#",
    ]
    names = sorted(set(revoked))
    if names:
        lines += ["", "# Revoked (`gridpeer community revoke`): their certificates are on the CRL;",
                  "# these lines silence a connection that was open when they were revoked."]
    for name in names:
        lines += [f"user {name}", "topic deny #"]
    return "\n".join(lines) + "\n"


def render_limits() -> str:
    """The message limits of a community broker (also the tests' plain Mosquitto's)."""
    lines = [
        "# No packet larger than the protocol's largest message: a client sending one is",
        "# disconnected before the broker reads it (the gateways bound what they read too).",
        f"max_packet_size {MAX_PACKET_BYTES}",
        "# Queues that hold a (re)connecting gateway's whole burst of retained messages.",
        f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        f"max_queued_bytes {MAX_QUEUED_BYTES}",
    ]
    return "\n".join(lines) + "\n"


def render_config(
    *,
    community: str,
    port: int,
    server: TlsFiles,
    acl: Path,
    crl: Path,
    data_dir: Path,
    bind_address: str | None = None,
    run_as: str | None = None,
    bridge: Bridge | None = None,
) -> str:
    """A complete ``mosquitto.conf``. ``run_as`` is the account Mosquitto drops to when started
    as root (None keeps its default, ``mosquitto``, which must then be able to read the server
    key and write ``data_dir``)."""
    listener = f"listener {port}" + (f" {bind_address}" if bind_address else "")
    lines = [
        f"# gridpeer community {community} broker, written by `gridpeer community broker-config`.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {acl.resolve()}",
        "# Retained certificates, presence and bids survive a broker restart.",
        "persistence true",
        f"persistence_location {data_dir.resolve()}/",
        "autosave_interval 60",
        render_limits().rstrip("\n"),
    ]
    if run_as is not None:
        lines.append(f"user {run_as}")
    lines += [
        "",
        listener,
        f"cafile {server.ca.resolve()}",
        f"certfile {server.cert.resolve()}",
        f"keyfile {server.key.resolve()}",
        f"crlfile {crl.resolve()}",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
    ]
    if bridge is not None:
        lines += ["", render_bridge(bridge).rstrip("\n")]
    return "\n".join(lines) + "\n"


def render_bridge(bridge: Bridge) -> str:
    """The bridge section for a second site's ``mosquitto.conf``.

    ``try_private`` tells the main broker that this is a bridge, which keeps retained flags
    (certificates, presence and bids are retained) and prevents loops; ``cleansession false``
    keeps the subscription on the main broker across a dropped uplink; a 10 s keepalive notices
    a dead uplink, or a connection attempt that stalled, in about 15 s rather than the 90 s of
    Mosquitto's default, and retries back off only to 10 s (a site without the other is a split
    community, so reconnecting fast matters more than sparing the uplink); the bridge's state
    notifications stay local because the ACL gives the bridge no ``$SYS`` rights there.
    """
    community = topics.check_id("community", bridge.community)
    lines = [
        f"connection gridpeer-{community}",
        f"address {bridge.host}:{bridge.port}",
        f"topic {topics.ROOT}/{community}/# both 1",
        "bridge_protocol_version mqttv311",
        "try_private true",
        "cleansession false",
        "notifications_local_only true",
        "keepalive_interval 10",
        "restart_timeout 1 10",
        f"bridge_cafile {bridge.tls.ca.resolve()}",
        f"bridge_certfile {bridge.tls.cert.resolve()}",
        f"bridge_keyfile {bridge.tls.key.resolve()}",
    ]
    return "\n".join(lines) + "\n"


def write_broker_config(
    *,
    out: Path,
    community: str,
    nodes: Sequence[str],
    now: dt.datetime,
    hostnames: Sequence[str] = (),
    port: int = DEFAULT_PORT,
    data_dir: Path | None = None,
    bridge_to: tuple[str, int] | None = None,
    run_as: str | None = None,
) -> tuple[BrokerFiles, list[Path]]:
    """Write the CA, certificates, ACL and config under ``out``; return the layout and what was
    written.

    Re-running is safe: an existing CA is reused (so certificates already handed out stay
    valid), existing node and bridge certificates and the CRL are kept, and the server
    certificate, ACL and configs are rewritten, so adding ``--hostname`` or ``--node`` later is
    one more run. A node whose certificate was deleted gets a new one (how a certificate is
    renewed, or a revoked id admitted again).
    """
    topics.check_id("community", community)
    for node in nodes:
        topics.check_id("node", node)
    files = BrokerFiles(root=out)
    written: list[Path] = []
    if files.ca_key.exists():
        ca = CommunityCa.load(cert=files.ca_cert, key=files.ca_key)
    else:
        ca = CommunityCa.create(community=community, now=now)
        ca.write(cert=files.ca_cert, key=files.ca_key)
        written.append(files.ca_cert)
    ca.issue_server(hostnames=hostnames, now=now).write(cert=files.server.cert,
                                                        key=files.server.key)
    written.append(files.server.cert)
    clients = [(node, files.node(node)) for node in nodes]
    clients.append((authority_identity(community), files.authority))
    if bridge_to is not None:
        clients.append((bridge_identity(community), files.bridge))
    for name, tls in clients:
        if not tls.cert.exists():
            ca.issue_client(common_name=name, now=now).write(cert=tls.cert, key=tls.key)
            written.append(tls.cert)
    if not files.crl.exists():
        write_crl(files.crl, ca.revocation_list(revoked={}, now=now))
        written.append(files.crl)
    files.acl.write_text(render_acl(community=community, revoked=revoked_nodes(files, ca)))
    written.append(files.acl)
    data = out / "data" if data_dir is None else data_dir
    data.mkdir(parents=True, exist_ok=True)

    def config(bridge: Bridge | None) -> str:
        return render_config(community=community, port=port, server=files.server,
                             acl=files.acl, crl=files.crl, data_dir=data, run_as=run_as,
                             bridge=bridge)

    files.config.write_text(config(None))
    written.append(files.config)
    if bridge_to is not None:
        host, remote_port = bridge_to
        files.bridged_config.write_text(
            config(Bridge(community=community, host=host, port=remote_port, tls=files.bridge))
        )
        written.append(files.bridged_config)
    return files, written


def revoked_nodes(files: BrokerFiles, ca: CommunityCa) -> list[str]:
    """The nodes whose certificate under ``nodes/`` is on the CRL: the CRL names serial numbers,
    the ACL names users, and the certificates join the two."""
    revoked = revoked_certificates(files.crl, ca.certificate)
    names = []
    for cert in sorted((files.root / "nodes").glob("*.crt")):
        if certificate_serial(cert) in revoked:
            names.append(cert.stem)
    return names


def revoke_client(*, root: Path, community: str, node: str, now: dt.datetime) -> list[Path]:
    """Shut ``node`` out of the broker whose files are under ``root``: its client certificate
    goes on the CRL and its user is denied everything in the ACL. Both take effect when the
    broker reloads (SIGHUP); returns the files written."""
    topics.check_id("node", node)
    files = BrokerFiles(root=root)
    ca = CommunityCa.load(cert=files.ca_cert, key=files.ca_key)
    if not ca.names(topics.check_id("community", community)):
        raise PkiError(f"{files.ca_cert} is not the CA of community {community!r}")
    revoked = revoked_certificates(files.crl, ca.certificate) if files.crl.exists() else {}
    revoked.setdefault(certificate_serial(files.node(node).cert), now)
    write_crl(files.crl, ca.revocation_list(revoked=revoked, now=now))
    files.acl.write_text(render_acl(community=community, revoked=revoked_nodes(files, ca)))
    return [files.crl, files.acl]


def revoke_at_broker(root: Path, *, community: str, node: str) -> None:
    """``gridpeer community revoke --broker-dir ROOT``: :func:`revoke_client`, and what to do
    next."""
    files = BrokerFiles(root=root)
    for path in revoke_client(root=root, community=community, node=node,
                              now=dt.datetime.now(dt.UTC)):
        print(f"wrote {path}")
    print(f"reload the broker to shut {node} out now: `systemctl reload mosquitto` (or "
          f"`kill -HUP` its pid); a bridged second site needs the same {files.crl.name} and "
          f"{files.acl.name} and a reload too")
