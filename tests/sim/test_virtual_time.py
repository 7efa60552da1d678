"""The virtual-time loop: time moves only when every task waits on a timer, never while the
process computes, waits for a thread, or has I/O ready or in flight, so a busy host cannot make
anything late, and the same day is the same to the µ however busy the host is."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

from gateway.clock import Clock, monotonic
from sim_devices import virtual_time
from sim_devices.demo.community import run_community
from sim_devices.demo.run import timing
from sim_devices.scenario import load_scenario


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()
    writer.close()


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
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
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


class _RawLines:
    """A plain non-blocking socket read by the loop's reader callback, as paho's MQTT socket
    is read under aiomqtt: no asyncio transport (so none of the options asyncio sets)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address)
        self.sock.setblocking(False)
        self.lines: asyncio.Queue[bytes] = asyncio.Queue()
        self._buffer = b""
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        self._buffer += self.sock.recv(4096)
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self.lines.put_nowait(line)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


def test_small_writes_on_a_plain_socket_take_no_virtual_time() -> None:
    """A small write behind bytes the peer has not acknowledged yet is held by Nagle's algorithm
    until the peer's delayed ACK, a timer in real time, so the clock would move first; paho
    writes its PUBACKs so (a gateway then joined the broker a control period later in one run
    than in another). The loop turns Nagle off on every TCP socket it watches."""
    async def main() -> tuple[int, float]:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        raw = _RawLines(server.sockets[0].getsockname())
        loop = asyncio.get_running_loop()
        before = loop.time()
        answered = 0
        for n in range(100):
            raw.sock.send(str(n).encode())  # two writes, the second behind the first
            raw.sock.send(b"\n")
            async with asyncio.timeout(0.001):
                assert await raw.lines.get() == str(n).encode()
            answered += 1
        elapsed = loop.time() - before
        raw.close()
        server.close()
        await server.wait_closed()
        return answered, elapsed

    assert virtual_time.run(main()) == (100, 0.0)


def test_bytes_the_kernel_still_holds_land_before_time_moves() -> None:
    """Bytes written but not yet readable at the other end (the kernel delivers them later on a
    busy host, or holds a small segment back) land before the loop looks: time does not move
    while they are in flight. Here the sender corks its socket and a real-time timer uncorks it,
    which stands in for the kernel's late delivery."""
    async def main() -> tuple[bytes, float, int]:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        raw = _RawLines(server.sockets[0].getsockname())
        loop = asyncio.get_running_loop()
        before = loop.time()
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        raw.sock.send(b"held\n")
        release = threading.Timer(
            0.05, raw.sock.setsockopt, (socket.IPPROTO_TCP, socket.TCP_CORK, 0))
        release.start()
        async with asyncio.timeout(0.001):
            line = await raw.lines.get()
        release.join()
        elapsed = loop.time() - before
        raw.close()
        server.close()
        await server.wait_closed()
        assert isinstance(loop, virtual_time.VirtualTimeLoop)
        return line, elapsed, loop.lapses

    assert virtual_time.run(main()) == (b"held", 0.0, 0)


def test_a_threads_work_comes_back_at_the_same_point_however_long_it_takes() -> None:
    """While a thread works (aiomqtt connects in one) the loop serves nothing else, so what the
    other tasks did by the time its work is back does not depend on how long it took: the
    order in which the gateways joined the broker, and with it the day, varied from run to
    run before."""
    async def main(work_s: float) -> list[str]:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        events: list[str] = []

        async def talk() -> None:
            for n in range(1000):
                writer.write(b"%d\n" % n)
                await reader.readline()
                events.append(f"reply {n}")

        async def work() -> None:
            await asyncio.to_thread(time.sleep, work_s)
            events.append("thread")

        await asyncio.gather(talk(), work())
        writer.close()
        server.close()
        await server.wait_closed()
        return events

    quick = virtual_time.run(main(0.0))
    assert virtual_time.run(main(0.05)) == quick


def _day(folder: Path) -> tuple[dict[tuple[int, str], tuple[float, int, int, int]], int]:
    """A short day of dynamic-street with the optimiser trading: each home's SoC and settlement
    per interval, and the loop's lapses."""
    scenario = load_scenario("dynamic-street")

    async def main() -> tuple[dict[tuple[int, str], tuple[float, int, int, int]], int]:
        log, _ = await run_community(out=folder, scenario=scenario, intervals=3,
                                     timing=timing(scenario, speed=720.0), planner="optimiser")
        loop = asyncio.get_running_loop()
        assert isinstance(loop, virtual_time.VirtualTimeLoop)
        days = {}
        for k, closed in log.closed.items():
            for home, c in closed.items():
                s = c.settlement
                assert s is not None, f"{home} settled nothing in interval {k}"
                days[k, home] = (c.soc_pct, s.grid_import_wh, s.grid_export_wh, s.money)
        return days, loop.lapses

    return virtual_time.run(main())


def test_the_same_day_twice_is_the_same_to_the_micro(tmp_path: Path) -> None:
    """Two runs of one day on the same code and seed: the same SoC and the same settlement for
    every home in every interval, to the Wh and the µ (bills that varied between runs made "no
    home pays more than without the market" unassertable). Holds on a busy host too: run it
    beside a CPU hog."""
    one, one_lapses = _day(tmp_path / "one")
    two, two_lapses = _day(tmp_path / "two")
    assert (one_lapses, two_lapses) == (0, 0)
    assert len(one) == 3 * 6
    assert one == two
