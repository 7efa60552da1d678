"""``gridpeer demo``: a simulated day of a scenario's community, through every real part.

:func:`.community.run_community` provisions the homes, serves their devices over Modbus
TCP, runs the broker and one real gateway per home; this module shows the day as it passes (one
line per interval, or one updating line on a terminal), runs the no-market baseline of the same
day, and ends with the summary table and ``OUT/report.html``.

The baseline runs *alongside* the market, in a second process with its own embedded broker (it
trades nothing, so it needs no community broker): the two worlds then each have a core of a
2-core machine and the whole demo takes about as long as one simulated day. Its files go to
``OUT/no_market/`` (an underscore, which no home name can have).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from gateway.home import HomeEvent, IntervalClosed
from protocols.market import Agreed
from sim_devices import virtual_time
from sim_devices.demo.community import CommunityLog, RunTiming, run_community
from sim_devices.demo.report import render
from sim_devices.demo.summary import (
    CommunitySummary,
    agreed_everywhere,
    agreed_result,
    format_summary,
    series,
    summarise,
)
from sim_devices.scenario import Scenario
from sim_devices.world import World

DEFAULT_SCENARIO = "sunny-street"
DEFAULT_SPEED = 1440.0
"""Simulated seconds per real second: a day in about a minute. The market and its baseline then
take about 1.3 cores of a 2-core x86 host (96 of 96 intervals agreed idle, 94 with another
process holding one core); a slower or busier host should pass ``--speed 720``
(docs/benchmarks.md, "gridpeer demo")."""
PHYSICS_STEP_MS = 30_000
"""The world's physics step at demo speed: fine next to a 15-minute interval and a 2-minute
control period, and cheap enough for the world to keep up with its clock."""
POLL_S = 120.0
"""Simulated seconds between device polls, which is also each gateway's control period."""
BASELINE_FOLDER = "no_market"


def timing(scenario: Scenario, *, speed: float) -> RunTiming:
    """The demo's pace for ``scenario``; the market run and its baseline must share it."""
    return RunTiming.of(scenario, speed=speed, physics_step_ms=PHYSICS_STEP_MS, poll_s=POLL_S)


def day_intervals(scenario: Scenario) -> int:
    """How many market intervals make one day of ``scenario``."""
    return max(1, round(86_400 / scenario.market.interval_s))


def _hhmm(seconds: float) -> str:
    minutes = int(seconds) // 60 % 1440
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def progress_line(log: CommunityLog, k: int, *, interval_s: float) -> str:
    """One interval as it closed: time of day, price, energy traded, agreement so far."""
    closed = log.closed[k]
    result = agreed_result(log, k)
    agreed_here = sum(isinstance(c.outcome, Agreed) for c in closed.values())
    price = ("no trade" if result is None or not result.trades
             else f"{result.price:3d} µ/Wh")
    traded = sum(t.energy_wh for t in result.trades) if result is not None else 0
    agreed = sum(agreed_everywhere(log, j) for j in log.complete)
    return (f"{_hhmm(k * interval_s)}  interval {len(log.complete):3d}/{len(log.window)}  "
            f"price {price:>10}  traded {traded:6d} Wh  "
            f"agreed by {agreed_here}/{len(closed)}  ({agreed} intervals agreed by all so far)")


def _baseline_in_process(conn: Connection, scenario: Scenario, out: Path, intervals: int,
                         seed: int | None, speed: float, virtual: bool) -> None:
    """The body of the baseline's process: the no-market run of the same day, its summary sent
    back (or its error, as text: the parent shows it as one line). Ctrl-C is the parent's to
    handle: it terminates this process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        day = run_community(out=out, scenario=scenario, intervals=intervals,
                            timing=timing(scenario, speed=speed), seed=seed, trade=False)
        log, _ = virtual_time.run(day) if virtual else asyncio.run(day)
        conn.send(summarise(log))
    except Exception as exc:  # noqa: BLE001 - crosses a process boundary as one line
        conn.send(BaselineError(f"no-market baseline: {exc}"))
    finally:
        conn.close()


class BaselineError(RuntimeError):
    """The no-market baseline run failed (its own message says why)."""


async def run_baseline(*, scenario: Scenario, out: Path, intervals: int, seed: int | None,
                       speed: float, virtual: bool = False) -> CommunitySummary:
    """Run the no-market baseline in a second process (a fresh interpreter: ``spawn``); on
    virtual time (:mod:`sim_devices.virtual_time`) when ``virtual``, as fast as its core allows.

    The answer is awaited as I/O on the pipe, not in a thread, so a caller on virtual time keeps
    its own clock moving meanwhile. Cancelled (the market run failed, Ctrl-C), it terminates that
    process rather than wait for its day to end.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_baseline_in_process, name="gridpeer-baseline",
                              args=(sender, scenario, out, intervals, seed, speed, virtual),
                              daemon=True)
    process.start()
    sender.close()
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def answered() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(receiver.fileno(), answered)
    try:
        await readable  # the answer, or end of file if the process died without one
        answer = _receive(receiver)
    finally:
        loop.remove_reader(receiver.fileno())
        if process.is_alive():
            process.terminate()
        await asyncio.to_thread(process.join)
        receiver.close()
    if isinstance(answer, BaseException):
        raise answer
    return answer


def _receive(conn: Connection) -> CommunitySummary | BaseException:
    try:
        answer: CommunitySummary | BaseException = conn.recv()
    except (EOFError, OSError):
        return BaselineError("no-market baseline: its process ended without an answer")
    return answer


async def check_broker(url: str, *, timeout_s: float = 5.0) -> None:
    """Fail early, in one line, when an external broker cannot even be reached over TCP."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ValueError(f"--broker must look like mqtt://host:1883, got {url!r}")
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(parts.hostname, parts.port or 1883)
    except (OSError, TimeoutError) as exc:
        raise BrokerUnreachable(f"cannot reach the broker at {url}: "
                                f"{exc or f'no answer within {timeout_s:g} s'}") from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


class BrokerUnreachable(ConnectionError):
    """``--broker`` names a broker nobody answers at."""


async def run_demo(
    *,
    scenario: Scenario,
    out: Path,
    intervals: int | None = None,
    seed: int | None = None,
    speed: float = DEFAULT_SPEED,
    broker_url: str | None = None,
    baseline: bool = True,
    stream: TextIO | None = None,
    observe: Callable[[HomeEvent, World], None] | None = None,
) -> int:
    """Run the demo; returns the exit status.

    ``intervals`` defaults to one day. ``observe`` sees every gateway event of the market run
    together with the simulated world (its ground truth), which is how the end-to-end test checks
    that setpoints really reached the devices.
    """
    if stream is None:  # looked up now, not at import: whoever redirected stdout meant it
        stream = sys.stdout
    if broker_url is not None:
        await check_broker(broker_url)
    count = intervals if intervals is not None else day_intervals(scenario)
    pace = timing(scenario, speed=speed)
    interval_s = pace.interval_s
    live = stream.isatty()
    shown: set[int] = set()

    baseline_task: list[asyncio.Task[CommunitySummary]] = []

    def on_event(event: HomeEvent, world: World, log: CommunityLog) -> None:
        if observe is not None:
            observe(event, world)
        if isinstance(event, IntervalClosed) and log.complete and log.complete[-1] not in shown:
            if baseline and not baseline_task:
                # Every gateway is up: the baseline's start-up no longer competes with theirs.
                baseline_task.append(asyncio.create_task(run_baseline(
                    scenario=scenario, out=out / BASELINE_FOLDER, intervals=count, seed=seed,
                    speed=speed)))
            k = log.complete[-1]
            shown.add(k)
            line = progress_line(log, k, interval_s=interval_s)
            stream.write(f"\r\x1b[K{line}" if live else f"{line}\n")
            stream.flush()

    def on_start(url: str, world: World) -> None:
        print(f"gridpeer demo: {scenario.name}, {len(world.homes)} homes, broker {url}, "
              f"{count} intervals of {interval_s / 60:g} min at {speed:g}x "
              f"(about {count * interval_s / speed:.0f} s)", file=stream, flush=True)
        if baseline:
            print("the same day without the market (self-consumption only) runs alongside in a "
                  f"second process: {out / BASELINE_FOLDER}/", file=stream, flush=True)

    try:
        log, _ = await run_community(
            out=out, scenario=scenario, intervals=count, timing=pace, seed=seed,
            broker_url=broker_url, on_event=on_event, on_start=on_start)
        if live:
            stream.write("\n")
        without = None
        if baseline_task:
            print("waiting for the no-market baseline to finish the day ...", file=stream,
                  flush=True)
            without = await baseline_task[0]
    finally:
        for task in baseline_task:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    market = summarise(log)
    print("\n" + format_summary(market, without), file=stream)
    report = out / "report.html"
    report.write_text(render(
        title=f"gridpeer demo: {scenario.name}", market=market, baseline=without,
        series=series(log, interval_s=interval_s),
        notes=[*([f"{scenario.description}."] if scenario.description else []),
               f"{len(log.complete)} intervals of {interval_s / 60:g} min from "
               f"{_hhmm(log.window[0] * interval_s)}, simulated at {speed:g}x; world seed "
               f"{scenario.seed if seed is None else seed}."]), encoding="utf-8")
    first = log.homes[0]
    print(f"\nreport: {report}\nledgers: {out}/<home>/state/ledger.db (check one with "
          f"`gridpeer ledger verify {out}/{first}/state/ledger.db`)", file=stream)
    return 0
