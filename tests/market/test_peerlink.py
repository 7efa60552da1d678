"""PeerLink and the embedded broker, through real sockets: presence, last will, retained replay,
fetch of retained messages, reconnect after the broker goes away or a publish fails."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from gateway.market.packetgate import MAX_PACKET_BYTES
from gateway.market.peerlink import Incoming, PeerLink, PeerLinkError
from protocols.market import topics
from sim_devices.demo.broker import EmbeddedBroker

COMMUNITY = "test"


def link(url: str, node: str, **kwargs: float) -> PeerLink:
    return PeerLink(broker_url=url, community=COMMUNITY, node=node,
                    **kwargs)  # type: ignore[arg-type]


class Sessions:
    """A presence hook that numbers the link's connections, as the market agent does (it also
    signs them): connection n says ``online-n`` and leaves ``offline-n`` as its will."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> tuple[bytes, bytes]:
        self.count += 1
        return f"online-{self.count}".encode(), f"offline-{self.count}".encode()


def present(url: str, node: str, **kwargs: float) -> PeerLink:
    return PeerLink(broker_url=url, community=COMMUNITY, node=node, presence=Sessions(),
                    **kwargs)  # type: ignore[arg-type]


async def next_on(peer: PeerLink, topic: str, payload: bytes | None = None) -> Incoming:
    async with asyncio.timeout(5):
        async for msg in peer.messages():
            if msg.topic == topic and (payload is None or msg.payload == payload):
                return msg
    raise AssertionError("unreachable")


async def test_broker_url_names_a_listening_port() -> None:
    async with EmbeddedBroker() as broker:
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        assert broker.port > 0
        async with aiomqtt.Client(broker.host, broker.port):
            pass
    with pytest.raises(RuntimeError, match="not running"):
        _ = broker.url


async def test_presence_online_then_offline_on_clean_exit(any_broker: str) -> None:
    async with link(any_broker, "watcher") as watcher:
        async with present(any_broker, "a"):
            await next_on(watcher, topics.presence(COMMUNITY, "a"), b"online-1")
        await next_on(watcher, topics.presence(COMMUNITY, "a"), b"offline-1")
        # The watcher has no presence hook: it declared no presence, not even a will.
        async with link(any_broker, "late") as late:
            await late.publish(topics.presence(COMMUNITY, "late"), b"sentinel")
            heard = []
            async with asyncio.timeout(5):
                async for msg in late.messages():
                    if msg.payload == b"sentinel":
                        break
                    heard.append(msg.topic)
            assert set(heard) == {topics.presence(COMMUNITY, "a")}


class CuttableProxy:
    """A TCP relay between a client and the broker whose connections the test can cut: a real way
    to lose a link without an MQTT DISCONNECT (a pulled cable, a crashed gateway)."""

    def __init__(self, broker_port: int) -> None:
        self._broker_port = broker_port
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"mqtt://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        self.cut()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._broker_port)
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()


async def test_last_will_marks_a_vanished_node_offline(any_broker: str) -> None:
    async with link(any_broker, "watcher") as watcher:
        async with CuttableProxy(int(any_broker.rsplit(":", 1)[1])) as proxy:
            a = present(proxy.url, "a", connect_timeout_s=1)
            await a.__aenter__()
            try:
                await next_on(watcher, topics.presence(COMMUNITY, "a"), b"online-1")
                proxy.cut()
                # The will is the offline of the connection that died ...
                await next_on(watcher, topics.presence(COMMUNITY, "a"), b"offline-1")
                # ...and the link comes back by itself through the same proxy, as a new session.
                await next_on(watcher, topics.presence(COMMUNITY, "a"), b"online-2")
                async with asyncio.timeout(5):  # presence goes out before the count moves
                    while a.connects < 2:
                        await asyncio.sleep(0.01)
                assert a.connects == 2
            finally:
                await a.__aexit__(None, None, None)


async def test_retained_bid_reaches_a_late_subscriber_and_fetch_replays_it(
    any_broker: str,
) -> None:
    bid_topic = topics.bid(COMMUNITY, 7, "a")
    async with link(any_broker, "a") as a:
        await a.publish(bid_topic, b"bid-7", retain=True)
        async with link(any_broker, "late") as late:
            first = await next_on(late, bid_topic)
            assert (first.payload, first.retained) == (b"bid-7", True)
            await late.fetch(topics.bids_of(COMMUNITY, 7))
            again = await next_on(late, bid_topic)
            assert (again.payload, again.retained) == (b"bid-7", True)
            await late.forget(topics.bids_of(COMMUNITY, 7))


async def test_reconnects_and_republishes_own_retained_after_broker_restart() -> None:
    bid_topic = topics.bid(COMMUNITY, 3, "a")
    async with EmbeddedBroker() as first:
        port = first.port
        a = link(first.url, "a", reconnect_s=0.05)
        await a.__aenter__()
        await a.publish(bid_topic, b"bid-3", retain=True)
    # The broker is gone, and with it every retained message.
    try:
        async with EmbeddedBroker(port=port) as second:
            await a.wait_connected(5)
            assert a.connects == 2
            async with link(second.url, "b") as b:
                got = await next_on(b, bid_topic)
                assert got.payload == b"bid-3"
                await a.publish(topics.commit(COMMUNITY, 3, "a"), b"c")
                await next_on(b, topics.commit(COMMUNITY, 3, "a"), b"c")
    finally:
        await a.__aexit__(None, None, None)


async def test_a_failed_publish_ends_the_session_and_the_link_reconnects(any_broker: str) -> None:
    """A PUBACK that times out leaves a connection that still delivers but is not trusted to
    send: the link drops it and reconnects, and what it published meanwhile goes out."""
    bid_topic = topics.bid(COMMUNITY, 4, "a")
    async with link(any_broker, "a", reconnect_s=0.05) as a, link(any_broker, "b") as b:
        client = a._client
        assert client is not None

        async def times_out(*args: object, **kwargs: object) -> None:
            raise aiomqtt.MqttError("Operation timed out")

        client.publish = times_out  # type: ignore[method-assign]
        await a.publish(bid_topic, b"bid-4", retain=True)  # remembered for the reconnect
        await a.wait_connected(5)
        assert a.connects == 2 and a._client is not client
        assert (await next_on(b, bid_topic)).payload == b"bid-4"


async def test_a_message_over_the_packet_limit_is_refused_before_it_is_sent(
    any_broker: str,
) -> None:
    """The broker would cut the connection for it (and, were it retained, at every reconnect):
    our own fault, raised at once, and the link stays up."""
    topic = topics.bid(COMMUNITY, 4, "a")
    async with link(any_broker, "a") as a:
        with pytest.raises(PeerLinkError, match="over the 163935-byte packet limit"):
            await a.publish(topic, b"x" * MAX_PACKET_BYTES, retain=True)
        await a.publish(topic, b"fits", retain=True)
        assert a.connects == 1


async def test_unreachable_broker_is_a_clear_error() -> None:
    async with EmbeddedBroker() as broker:
        port = broker.port
    with pytest.raises(PeerLinkError, match="no connection"):
        async with link(f"mqtt://127.0.0.1:{port}", "a", connect_timeout_s=0.3):
            pass


def test_broker_url_must_be_mqtt() -> None:
    with pytest.raises(ValueError, match="mqtt://host:port"):
        link("http://x", "a")
