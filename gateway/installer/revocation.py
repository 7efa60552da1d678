"""``gridpeer community publish-revocation``: put a signed revocation on the community broker.

A revocation is only useful once every gateway has it, including one that starts a month later,
so it is published *retained* on ``revoked/<node>``, where the broker's ACL lets only the
authority's client certificate write (:mod:`.brokerconfig`): the revoked node cannot clear it,
and its gateway republishing its own certificate on ``roster/<node>`` does not replace it.
The file is checked before anything is sent, so a wrong file never reaches the broker.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt

from gateway.market.peerlink import broker_tls_context, parse_broker_url
from gateway.tls import TlsFiles
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
