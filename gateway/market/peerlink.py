"""PeerLink: the thin aiomqtt adapter between one gateway and its community's broker.

It knows MQTT and the topic layout, nothing about bids or signatures: payloads are opaque bytes.
That keeps the market logic testable without a broker and this file small. Presence payloads
come from the caller once per connection (``presence``): the market agent signs an ``online`` and,
in advance, the ``offline`` that becomes the connection's last will, so that no one else can say
a member is offline. A link without them (a probe, an auditor) declares no presence at all.

Broker loss is normal on a Pi at the end of a flaky uplink, so the link reconnects forever with a
short pause, re-subscribes, and republishes this node's own retained messages (certificate,
presence, current bid): a broker that restarted without persistence has forgotten them, and the
peers need them to clear the same bid set. Clears made while the broker was away go out too: a
broker that kept its retained messages would otherwise go on serving the stale ones. The last
will marks the node offline when the connection dies without a goodbye; a clean exit publishes
the same ``offline`` payload itself.

In the field the URL is ``mqtts://`` and the link presents this node's TLS client certificate
(:class:`gateway.tls.TlsFiles`): the broker takes its Common Name as the username that its ACL
matches, so a node can publish only under its own id. The TLS context is built once, in the
constructor, so a missing or wrong file is an error at start-up, not an endless reconnect loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import aiomqtt

from gateway.aio import raise_if_cancelling
from gateway.logs import worth_logging
from gateway.market.packetgate import (
    CUT,
    MAX_PACKET_BYTES,
    PacketGate,
    gate_incoming,
    publish_size,
)
from gateway.market.retained import MAX_TOPICS, OwnRetained
from gateway.tls import TlsFiles
from protocols.market import topics

log = logging.getLogger(__name__)

_QOS = 1
PUBLISH_TRIES = 3
"""Publishes that may fail in a row (each a PUBACK that timed out) before the link reconnects. A
single timeout is usually a busy moment, not a dead link: a gateway that reconnected at the first
one, while a peer flooded it, lost the flood queued for its old session and stopped hearing it."""


class PeerLinkError(RuntimeError):
    """Our side of the link failed: not connected in time, used outside ``async with``, or asked
    to publish a message over the packet limit."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message as the broker delivered it; ``retained`` marks a replay of a stored one."""

    topic: str
    payload: bytes
    retained: bool


_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


def parse_broker_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an ``mqtt://`` or ``mqtts://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(
            f"broker_url must look like mqtt://host:port or mqtts://host:port, got {url!r}"
        )
    return parts.scheme, parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme]


def broker_tls_context(scheme: str, tls: TlsFiles | None) -> ssl.SSLContext | None:
    """Refuse a scheme and TLS files that disagree: silently sending in the clear because the
    URL said ``mqtt://`` would be the worst way to fail."""
    if scheme == "mqtts" and tls is None:
        raise ValueError("an mqtts:// broker needs tls=TlsFiles(ca=..., cert=..., key=...)")
    if scheme == "mqtt" and tls is not None:
        raise ValueError("TLS files were given but the broker URL is mqtt://; use mqtts://")
    return None if tls is None else tls.client_context()


class PeerLink:
    """``async with PeerLink(...) as link:`` then ``async for msg in link.messages():``.

    Only one consumer may iterate :meth:`messages`; messages that arrive while nobody iterates are
    queued (bounded by ``max_queued``; the oldest are kept, new ones are counted in ``dropped``).
    No packet from the broker over ``max_packet_bytes`` is ever buffered whole
    (:mod:`gateway.market.packetgate`): such a message is dropped and counted in ``oversized``.
    This node's retained messages, clears included, are replayed after every reconnect
    (:class:`~gateway.market.retained.OwnRetained`, at most ``max_retained`` topics).
    """

    def __init__(
        self,
        *,
        broker_url: str,
        community: str,
        node: str,
        keepalive_s: int = 5,
        reconnect_s: float = 0.2,
        connect_timeout_s: float = 5.0,
        max_queued: int = 100_000,
        tls: TlsFiles | None = None,
        presence: Callable[[], tuple[bytes, bytes]] | None = None,
        max_packet_bytes: int = MAX_PACKET_BYTES,
        max_retained: int = MAX_TOPICS,
    ) -> None:
        """``presence``: called at each connection for that connection's ``(online, offline)``
        payloads (the market agent signs them, :class:`protocols.messages.Presence`); the
        ``offline`` one is the last will and the goodbye. None: no presence, no will."""
        self._scheme, self._host, self._port = parse_broker_url(broker_url)
        self._tls_context = broker_tls_context(self._scheme, tls)
        self.community = topics.check_id("community", community)
        self.node = topics.check_id("node", node)
        self._presence_topic = topics.presence(community, node)
        self._presence = presence
        self._goodbye: bytes | None = None  # this connection's offline presence
        self._keepalive_s = keepalive_s
        self._reconnect_s = reconnect_s
        self._connect_timeout_s = connect_timeout_s
        self._inbox: asyncio.Queue[Incoming] = asyncio.Queue(maxsize=max_queued)
        self._max_packet_bytes = max_packet_bytes
        self._own_retained = OwnRetained(limit=max_retained)
        self._extra_filters: set[str] = set()
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._failed_publishes = 0  # in a row, on the current connection
        self.connects = 0
        self.dropped = 0
        self.oversized = 0

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._supervise(), name=f"peerlink-{self.node}")
        try:
            await self.wait_connected(self._connect_timeout_s)
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, goodbye = self._client, self._goodbye
        if client is not None and goodbye is not None:
            # A clean disconnect does not fire the will, so say goodbye ourselves.
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(self._presence_topic, goodbye, qos=_QOS, retain=True)
        await self._stop()

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        except TimeoutError as exc:
            raise_if_cancelling(exc)
            raise PeerLinkError(
                f"{self.node}: no connection to {self._scheme}://{self._host}:{self._port} "
                f"within {timeout_s} s"
            ) from None

    async def messages(self) -> AsyncIterator[Incoming]:
        while True:
            yield await self._inbox.get()

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish now, or, if the broker is away, as soon as it is back.

        A retained message is remembered and republished after every reconnect; an empty payload
        clears it, as in MQTT, and a clear is kept until the broker has it. A non-retained one
        waits up to ``connect_timeout_s`` for a connection, then raises :class:`PeerLinkError`.
        A message over ``max_packet_bytes`` is refused here: the field broker would cut the
        connection for it, and at every reconnect again if it were retained.
        """
        if self._task is None:
            raise PeerLinkError("PeerLink.publish outside 'async with'")
        size = publish_size(topic, payload)
        if size > self._max_packet_bytes:
            raise PeerLinkError(f"{self.node}: a {size}-byte message on {topic} is over the "
                                f"{self._max_packet_bytes}-byte packet limit")
        if retain:
            self._remember(topic, payload)
        while True:
            client = self._client
            if client is None:
                if retain:
                    # Remembered; the reconnect publishes it. Waiting here would stall the
                    # caller (the market's tick loop) past its gate and start deadlines.
                    return
                await self.wait_connected(self._connect_timeout_s)
                continue
            try:
                await client.publish(topic, payload, qos=_QOS, retain=retain)
            except aiomqtt.MqttError as exc:
                raise_if_cancelling(exc)
                self._failed_publishes += 1
                if self._failed_publishes < PUBLISH_TRIES:
                    log.info("%s: publish to %s failed (%s); trying again", self.node, topic, exc)
                    continue
                log.info("%s: publish to %s failed %d times in a row (%s); reconnecting",
                         self.node, topic, self._failed_publishes, exc)
                self._mark_down(client)
                continue
            self._failed_publishes = 0
            if retain:
                self._own_retained.delivered(topic, payload)
            raise_if_cancelling()
            return

    def _remember(self, topic: str, payload: bytes) -> None:
        dropped = self._own_retained.write(topic, payload)
        if dropped is not None:
            log.warning("%s: more than %d own retained topics; %s is no longer replayed after a "
                        "reconnect (%d dropped so far)", self.node, self._own_retained.limit,
                        dropped, self._own_retained.dropped)

    async def fetch(self, topic_filter: str) -> None:
        """Subscribe to ``topic_filter`` (kept across reconnects) so the broker resends what it
        retains under it; used to fetch the bids this gateway missed."""
        self._extra_filters.add(topic_filter)
        client = self._client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.subscribe(topic_filter, qos=_QOS)

    async def forget(self, topic_filter: str) -> None:
        """Drop a filter added with :meth:`fetch`."""
        self._extra_filters.discard(topic_filter)
        client = self._client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.unsubscribe(topic_filter)

    def _mark_down(self, client: aiomqtt.Client) -> None:
        """Stop using ``client``, and end its session so that the supervisor reconnects.

        Publishes that keep failing (``PUBLISH_TRIES`` PUBACKs timed out) leave a connection that
        may still deliver messages but is no longer trusted to send: without ending it, retained
        publishes would only be remembered for a reconnect that never comes, and the node would
        go on hearing its peers while none of its bids or commitments left (docs/reliability.md,
        the 24-hour soak).
        """
        if self._client is client:
            self._client = None
            self._connected.clear()
            session = self._session_task
            if session is not None and session is not asyncio.current_task():
                session.cancel()

    async def _supervise(self) -> None:
        while True:
            self._session_task = asyncio.create_task(self._session(),
                                                     name=f"peerlink-session-{self.node}")
            try:
                await self._session_task
            except aiomqtt.MqttError as exc:
                log.info("%s: broker connection lost (%s); reconnecting", self.node, exc)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the link is closing
                log.info("%s: a publish failed; reconnecting", self.node)
            await asyncio.sleep(self._reconnect_s)

    async def _session(self) -> None:
        online, will = None, None
        if self._presence is not None:
            online, self._goodbye = self._presence()
            will = aiomqtt.Will(self._presence_topic, self._goodbye, qos=_QOS, retain=True)
        client = aiomqtt.Client(
            self._host,
            self._port,
            identifier=f"gridpeer-{self.community}-{self.node}",
            will=will,
            keepalive=self._keepalive_s,
            timeout=self._connect_timeout_s,
            tls_context=self._tls_context,
        )
        gate_incoming(client, PacketGate(limit=self._max_packet_bytes))
        async with client:
            try:
                for topic_filter in (*topics.subscriptions(self.community), *self._extra_filters):
                    await client.subscribe(topic_filter, qos=_QOS)
                if online is not None:
                    await client.publish(self._presence_topic, online, qos=_QOS, retain=True)
                # Connected before the republish: a retained message added from now on is
                # published by its own publish(), one added before is in this snapshot.
                self._client = client
                self._failed_publishes = 0
                self.connects += 1
                self._connected.set()
                for topic, payload in self._own_retained.replay():
                    await client.publish(topic, payload, qos=_QOS, retain=True)
                    self._own_retained.delivered(topic, payload)
                async for message in client.messages:
                    self._deliver(message)
            finally:
                self._mark_down(client)

    def _deliver(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = b"" if payload is None else str(payload).encode()
        if payload == CUT:
            self.oversized += 1
            if worth_logging(self.oversized):
                log.warning("%s: dropped a message over %d bytes on %s (%d so far)", self.node,
                            self._max_packet_bytes, message.topic.value, self.oversized)
            return
        incoming = Incoming(topic=message.topic.value, payload=bytes(payload),
                            retained=message.retain)
        try:
            self._inbox.put_nowait(incoming)
        except asyncio.QueueFull:
            self.dropped += 1
