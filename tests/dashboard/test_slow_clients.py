"""Slow senders (slowloris) over real sockets: they are cut off, and the owner is still served.

Each slow sender trickles a request that never ends, one byte at a time, far more often than any
per-read timeout would notice. The deadline is a parameter (``request_timeout_s``), so the test
takes seconds; it asserts what each client got, not how long anything took.
"""

import asyncio
import contextlib
import json

from gateway.dashboard import Dashboard, HttpLimits
from tests.dashboard.community import http, parse_response

TRICKLE_S = 0.1
"""One byte this often: well inside any per-read timeout."""


async def slow_sender(port: int, source: str) -> bytes:
    """Open a connection from ``source`` and trickle a header block that never ends, until the
    server closes the connection; what the server sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    answer = asyncio.create_task(reader.read())

    async def trickle() -> None:
        data = b"GET /api/status HTTP/1.1\r\nhost: localhost\r\nx-slow: " + b"a" * 100_000
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(TRICKLE_S)

    sending = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(60):  # a guard only: the outcome is asserted by the caller
            return await answer
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sending
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def served(dashboard: Dashboard, count: int) -> None:
    async with asyncio.timeout(30):  # a guard only
        while dashboard.served < count:
            await asyncio.sleep(0.01)


async def test_slow_senders_are_cut_and_one_host_cannot_take_every_slot(home):
    """Eight slow senders from one host: four get a slot (the per-client cap) and are cut at the
    request deadline with a 408, four are refused at once (429), and another client of the LAN
    is served while they trickle."""
    limits = HttpLimits(request_timeout_s=2.0, max_connections=8, max_connections_per_client=4)
    async with Dashboard(node=home, port=0, limits=limits) as d:
        slow = [asyncio.create_task(slow_sender(d.port, "127.0.0.2")) for _ in range(8)]
        await served(d, 4)  # four of them hold slots
        status, _, _ = await http(d.url, "GET", "/api/status")
        assert status == 200
        answers = [parse_response(a)[0] if a else None for a in await asyncio.gather(*slow)]
        _, _, metrics = await http(d.url, "GET", "/metrics")
    assert sorted(answers, key=str) == [408] * 4 + [429] * 4
    assert 'reason="request-timeout"} 4' in metrics.decode()
    assert 'reason="client-connection-cap"} 4' in metrics.decode()


async def test_slow_senders_from_many_hosts_are_cut_and_the_owner_is_then_served(home):
    """Slow senders from as many hosts as there are slots hold them all; the deadline frees
    them, so a client that retries as the page does (every second) is served, and each slow
    sender was answered 408 however steadily it kept sending."""
    limits = HttpLimits(request_timeout_s=3.0, max_connections=4, max_connections_per_client=4)
    async with Dashboard(node=home, port=0, limits=limits) as d:
        slow = [asyncio.create_task(slow_sender(d.port, f"127.0.0.{2 + i}")) for i in range(4)]
        await served(d, 4)  # every slot is held
        seen = []
        async with asyncio.timeout(60):  # a guard only
            while not seen or seen[-1] != 200:
                status, _, body = await http(d.url, "GET", "/api/status")
                seen.append(status)
                if status == 503:
                    assert json.loads(body)["error"] == "too many connections"
                    await asyncio.sleep(0.5)
        answers = [parse_response(a)[0] for a in await asyncio.gather(*slow)]
    assert answers == [408] * 4
    assert seen[0] == 503 and set(seen) == {503, 200}
