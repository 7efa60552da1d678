"""The virtual-time loop: time moves only when every task waits on a timer, never while the
process computes, waits for a thread, or has I/O ready, so a busy host cannot make anything late."""

from __future__ import annotations

import asyncio
import time

from gateway.clock import Clock, monotonic
from sim_devices import virtual_time


def test_a_day_of_timers_passes_at_once_and_in_order() -> None:
    async def main() -> list[tuple[float, str]]:
        woke: list[tuple[float, str]] = []

        async def sleeper(name: str, delay_s: float) -> None:
            await asyncio.sleep(delay_s)
            woke.append((asyncio.get_running_loop().time(), name))

        await asyncio.gather(sleeper("day", 86_400), sleeper("hour", 3_600),
                             sleeper("second", 1))
        return woke

    woke = virtual_time.run(main())
    assert [name for _, name in woke] == ["second", "hour", "day"]
    assert [round(t) for t, _ in woke] == [1, 3_600, 86_400]


def test_computing_takes_no_virtual_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        before = loop.time()
        deadline = time.perf_counter() + 0.2
        while time.perf_counter() < deadline:  # a starved or slow host, as the clock sees it
            pass
        return loop.time() - before

    assert virtual_time.run(main()) == 0.0


def test_a_thread_holds_the_clock_until_its_work_is_back() -> None:
    """A timer due during a thread's work fires after the work is back: SQLite writes in a
    thread never let a gateway's deadline pass."""
    async def main() -> list[str]:
        order: list[str] = []

        async def timer() -> None:
            await asyncio.sleep(0.001)
            order.append("timer")

        def work() -> None:
            time.sleep(0.2)
            order.append("thread")

        await asyncio.gather(timer(), asyncio.to_thread(work))
        return order

    assert virtual_time.run(main()) == ["thread", "timer"]


def test_loopback_io_takes_no_virtual_time() -> None:
    """A request over a real TCP socket is answered before a timeout on the virtual clock can
    fire: the Modbus servers, the broker and the gateways of a simulated day talk this way."""
    async def main() -> tuple[int, float]:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        before = loop.time()
        answered = 0
        for n in range(200):
            writer.write(f"{n}\n".encode())
            async with asyncio.timeout(0.001):
                assert await reader.readline() == f"{n}\n".encode()
            answered += 1
        elapsed = loop.time() - before
        writer.close()
        server.close()
        await server.wait_closed()
        return answered, elapsed

    assert virtual_time.run(main()) == (200, 0.0)


def test_the_gateway_clock_reads_the_running_loop() -> None:
    async def main() -> tuple[float, int]:
        clock = Clock(origin_ms=0, speed=720.0)
        await asyncio.sleep(900 / 720)  # one 15-minute interval of the scaled clock
        return monotonic(), clock.now_ms()

    now, clock_ms = virtual_time.run(main())
    assert now == 900 / 720
    assert clock_ms == 900_000
    assert abs(monotonic() - time.monotonic()) < 1.0  # outside a loop: the system's clock
