"""One gateway's market agent as its own process, so a test can read its memory as the kernel
counts it (``VmHWM``, what systemd's ``MemoryMax`` weighs) while it trades.

``python -m tests.deploy.gateway_child CONFIG.json``; then one command per stdin line:
``bid K SIDE WH PRICE`` submits a bid for interval K and answers, once the interval is over, with
one JSON line: the outcome, the energy this node bought and sold, and the process's peak and
current memory. The first line written is ``{"ready": ...}`` once the agent is in the market.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from gateway.identity import load_certificate, load_key_file
from gateway.market.agent import MarketAgent
from gateway.tls import TlsFiles
from protocols.market import Agreed, Timing
from tests.market.community import COMMUNITY, PARAMS, now_ms

_OUTCOME_S = 30.0


def memory_kb() -> dict[str, int]:
    """The process's peak (``VmHWM``) and current (``VmRSS``) resident memory, in kB."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0])
    return found


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def serve(agent: MarketAgent) -> None:
    while line := await asyncio.to_thread(sys.stdin.readline):
        _, k_text, side, wh, price = line.split()
        k = int(k_text)
        report: dict[str, Any] = {"k": k}
        try:
            await agent.submit_bid(k, side, int(wh), int(price))
            async with asyncio.timeout(_OUTCOME_S):
                outcome = await agent.outcome(k)
        except Exception as exc:  # reported, not fatal: the test decides
            report["error"] = f"{type(exc).__name__}: {exc}"
        else:
            report["agreed"] = isinstance(outcome, Agreed)
            position = outcome.position if isinstance(outcome, Agreed) else None
            report["bought_wh"] = 0 if position is None else position.bought_wh
        link = agent._link
        say(**report, oversized=getattr(link, "oversized", None), **memory_kb())


async def main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    tls = None if config["tls"] is None else TlsFiles(*(Path(p) for p in config["tls"]))
    certificate, _ = load_certificate(Path(config["certificate"]))
    agent = MarketAgent(
        broker_url=config["broker_url"], community=COMMUNITY, node=config["node"],
        identity=load_key_file(Path(config["key"])), certificate=certificate,
        authority_key_hex=config["authority_hex"], timing=Timing(**config["timing"]),
        params=PARAMS, clock=now_ms, tls=tls,
    )
    async with agent:
        say(ready=config["node"], **memory_kb())
        await serve(agent)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
