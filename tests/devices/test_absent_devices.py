"""A real gateway starts without its devices: one whose Modbus server is not up yet, and one it
cannot drive.

A street of three real :class:`GatewayNode` s (their real Modbus clients against the simulated
world over TCP, signed bids through the embedded broker, scaled clock). home-1's battery is
configured at a port nothing listens on when the gateway starts (an inverter asleep, a battery
switched off); home-3's inverter is pysunspec2's image with model 129 only, which no kind of
ours can be driven through; home-2's battery is pysunspec2's draft-era DER image, which reports
no state of charge. Every gateway starts and trades; home-1 bids without battery energy until
its battery's server comes up, adopts it from the next interval and then commands it; home-3's
status says, throughout, that its inverter is unsupported and what it lacks; home-2's status
(the file, the dashboard's JSON) says its SoC is unknown (null), never NaN.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.clock import Clock
from gateway.config import load_config
from gateway.home import BidMade, GatewayNode, HomeEvent, IntervalClosed, SetpointWritten, running
from gateway.identity import load_certificate, load_key_file
from protocols.market import Agreed
from sim_devices.demo.broker import EmbeddedBroker
from sim_devices.demo.community import provision
from sim_devices.world import World
from tests.devices.maps import der_1547
from tests.devices.served import INVERTER_129, device_file, framed, serve
from tests.street import HOMES, NAMES, ROLES, SPEED, TIMING

pytestmark = pytest.mark.realtime


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def _forward(port: int, target: tuple[str, int]) -> AsyncIterator[None]:
    """The battery's Modbus server coming up on ``port``: every connection is piped to
    ``target`` (the simulated battery), bytes unchanged."""
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    tasks: set[asyncio.Task[None]] = set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*target)
        for task in (asyncio.create_task(pipe(reader, up_writer)),
                     asyncio.create_task(pipe(up_reader, writer))):
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(accept, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_gateway_trades_without_an_absent_battery_adopts_it_when_it_answers_and_says_why_it_cannot_drive_an_inverter(  # noqa: E501
        tmp_path: Path) -> None:
    events: dict[str, list[HomeEvent]] = defaultdict(list)
    world = World(homes=HOMES, seed=5, speed=SPEED, start_s=11 * 3600)
    battery_port = _free_port()
    unsupported = framed([device_file(INVERTER_129)])
    async with contextlib.AsyncExitStack() as stack:
        broker = await stack.enter_async_context(EmbeddedBroker(port=0))
        served = await stack.enter_async_context(world.serve())
        inverter_129 = await stack.enter_async_context(serve({1: unsupported}))
        draft_der = await stack.enter_async_context(serve({1: framed(der_1547(tmp_path))}))
        addresses = {(h, r): served.address(h, r) for h in NAMES for r in ROLES}
        configs = provision(tmp_path, HOMES, addresses, broker_url=broker.url, timing=TIMING)
        base = Clock(origin_ms=world.now_ms, speed=SPEED)
        nodes: dict[str, GatewayNode] = {}
        for path in configs:
            name = path.parent.name
            text = path.read_text()
            if name == "home-1":
                host, port = addresses[name, "battery"]
                text = text.replace(f"tcp://{host}:{port}", f"tcp://127.0.0.1:{battery_port}")
            if name == "home-2":
                host, port = addresses[name, "battery"]
                text = text.replace(f"tcp://{host}:{port}", draft_der.url)
            if name == "home-3":
                host, port = addresses[name, "pv"]
                text = text.replace(f"tcp://{host}:{port}", inverter_129.url)
            path.write_text(text)
            config = load_config(path)
            envelope, _ = load_certificate(config.certificate_file)
            node = GatewayNode(config=config, key=load_key_file(config.key_file),
                               certificate=envelope,
                               clock=Clock(origin_ms=base.origin_ms, speed=SPEED, _t0=base._t0),
                               on_event=events[name].append)
            await stack.enter_async_context(running(node))  # starts: nothing raised
            nodes[name] = node

        home1, home3 = nodes["home-1"], nodes["home-3"]
        battery = home1.devices["battery"]
        assert not battery.adopted and battery.adoption.why == "absent"
        health = home1.status().devices["battery"]
        assert health.adoption == "waiting" and health.why == "absent" and health.stale
        assert health.missing is not None and "cannot open" in health.missing
        pv = home3.status().devices["pv"]
        assert pv.adoption == "waiting" and pv.why == "unsupported"
        assert pv.missing is not None and "MissingModel" in pv.missing and "129" in pv.missing

        def agreed_without_battery() -> list[IntervalClosed]:
            return [e for e in events["home-1"] if isinstance(e, IntervalClosed)
                    and isinstance(e.outcome, Agreed)]

        async with asyncio.timeout(90):  # real seconds, generous: the host is shared
            while not agreed_without_battery():
                await asyncio.sleep(0.05)
        assert not battery.adopted
        bids = [e for e in events["home-1"] if isinstance(e, BidMade)]
        assert bids and all(b.plan.battery_wh == 0 for b in bids), bids
        assert not [e for e in events["home-1"] if isinstance(e, SetpointWritten)]

        async with _forward(battery_port, addresses["home-1", "battery"]):
            async with asyncio.timeout(120):
                while not battery.adopted:
                    await asyncio.sleep(0.05)
            joined = home1._interval_at(home1.clock.now_ms())
            assert battery.adoption.adopt_from == joined
            async with asyncio.timeout(90):
                while not [e for e in events["home-1"] if isinstance(e, SetpointWritten)]:
                    await asyncio.sleep(0.05)
            written = [e for e in events["home-1"] if isinstance(e, SetpointWritten)]
            assert all(e.interval >= joined for e in written), (joined, written)
            assert home1.status().devices["battery"].adoption == "adopted"
            assert home1.status().battery is not None
        unknown = nodes["home-2"].status()
        assert unknown.battery is not None and unknown.battery.soc_pct is None
        on_file = (tmp_path / "home-2" / "state" / "status.json").read_text()
        assert json.loads(on_file, parse_constant=lambda c: pytest.fail(c))[
            "battery"]["soc_pct"] is None
        pv = home3.status().devices["pv"]
        assert pv.adoption == "waiting" and pv.why == "unsupported"
        assert 0 < pv.retry_in_s <= 3600  # type: ignore[operator]
        assert [e for e in events["home-3"] if isinstance(e, IntervalClosed)
                and isinstance(e.outcome, Agreed)], "home-3 trades without its inverter"
