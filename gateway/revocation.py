"""``gridpeer community publish-revocation``: put a signed revocation on the community broker.

A revocation is only useful once every gateway has it, including one that starts a month later,
so it is published *retained* on ``revoked/<node>``, where the broker's ACL lets only the
authority's client certificate write (``gateway.brokerconfig``): the revoked node cannot clear
it, and its gateway republishing its own certificate on ``roster/<node>`` does not replace it.
The file is checked before anything is sent, so a wrong file never reaches the broker.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import aiomqtt

from gateway.market.peerlink import broker_tls_context, parse_broker_url
from gateway.pki import TlsFiles
from protocols.market import topics
from protocols.messages import MessageError, Revocation, SignedEnvelope
from protocols.signing import Rejected, verify


class RevocationError(ValueError):
    """A revocation that cannot be published, or a broker that did not take it."""


def checked_revocation(path: Path) -> tuple[bytes, Revocation]:
    """The file's bytes and the revocation they carry, verified (signature, schema)."""
    try:
        envelope = SignedEnvelope.from_bytes(path.read_bytes())
    except FileNotFoundError:
        raise RevocationError(f"{path}: no such file (make it with `gridpeer community revoke`)"
                              ) from None
    except MessageError as exc:
        raise RevocationError(f"{path}: not a signed envelope: {exc}") from None
    if envelope.kind != "revoke":
        raise RevocationError(f"{path}: a {envelope.kind!r} envelope, not a revocation; "
                              "certificates are published by the node's own gateway")
    verified = verify(envelope, expected_kind="revoke")
    if isinstance(verified, Rejected):
        raise RevocationError(f"{path}: not a valid revocation: {verified.reason}")
    assert isinstance(verified.body, Revocation)  # guaranteed by expected_kind
    return envelope.to_bytes(), verified.body


async def publish_revocation(
    path: Path, *, broker_url: str, tls: TlsFiles | None, timeout_s: float = 10.0
) -> str:
    """Publish the revocation in ``path`` retained with QoS 1; returns the topic."""
    payload, revocation = checked_revocation(path)
    scheme, host, port = parse_broker_url(broker_url)
    topic = topics.revoked(revocation.community, revocation.node)
    client = aiomqtt.Client(host, port, tls_context=broker_tls_context(scheme, tls),
                            identifier=f"authority-{revocation.community}", timeout=timeout_s)
    try:
        async with asyncio.timeout(timeout_s), client:
            await client.publish(topic, payload, qos=1, retain=True)
    except (aiomqtt.MqttError, TimeoutError) as exc:
        raise RevocationError(f"{broker_url}: revocation not published: {exc or 'timed out'}"
                              ) from None
    return topic


def _cmd_publish_revocation(args: argparse.Namespace) -> int:
    files = (args.tls_ca, args.tls_cert, args.tls_key)
    if None not in files:
        tls: TlsFiles | None = TlsFiles(ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key)
    elif files == (None, None, None):
        tls = None
    else:
        raise RevocationError("give all of --tls-ca, --tls-cert and --tls-key, or none")
    topic = asyncio.run(publish_revocation(args.revocation, broker_url=args.broker, tls=tls))
    print(f"published {args.revocation} retained on {topic}; every gateway drops the node's "
          "messages from its next check on")
    return 0


def add_publish_revocation_parser(
    community_subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``gridpeer community publish-revocation`` on the ``community`` subparsers."""
    parser = community_subparsers.add_parser(
        "publish-revocation", help="publish a signed revocation (from `revoke`) on the broker")
    parser.add_argument("revocation", type=Path, help="the file `gridpeer community revoke` wrote")
    parser.add_argument("--broker", required=True,
                        help="the community broker, mqtts://host:8883 (or mqtt:// without TLS)")
    parser.add_argument("--tls-ca", type=Path, help="the community CA (ca.crt)")
    parser.add_argument("--tls-cert", type=Path,
                        help="the authority's client certificate (authority.crt from "
                             "`gridpeer community broker-config`)")
    parser.add_argument("--tls-key", type=Path, help="its key (authority.key)")
    parser.set_defaults(func=_cmd_publish_revocation)
