"""Real homes for the dashboard tests (the suite's street of gateways, ``tests/street.py``, with
the demo's homes) and the HTTP helpers the dashboard tests speak to them with."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.dashboard.pairing import CREDENTIAL_FILE, CredentialFile, OwnerCredential
from gateway.home import GatewayNode, HomeEvent
from sim_devices.demo.community import RunTiming
from sim_devices.home import HomeSpec
from sim_devices.scenario import load_scenario
from tests.street import street

DEMO_HOMES: tuple[HomeSpec, ...] = tuple(load_scenario("sunny-street").home_specs())
"""The demo scenario's homes; the dashboard tests start one or a few of them by hand."""


@contextlib.asynccontextmanager
async def community(
    out: Path, *, homes: Sequence[HomeSpec] = DEMO_HOMES,
    on_event: Callable[[HomeEvent], None] = lambda _e: None,
) -> AsyncIterator[dict[str, GatewayNode]]:
    """Running gateways by name (the suite's street, ``tests/street.py``, of the demo's homes at
    the demo's timing), each with fresh meter and battery readings."""
    async with street(out, homes=homes, seed=7, timing=RunTiming(), start_s=10 * 3600,
                      on_event=on_event) as running:
        nodes = running.nodes
        async with asyncio.timeout(10):
            while not all(n.status().battery and n.status().meter for n in nodes.values()):
                await asyncio.sleep(0.05)
        yield nodes


async def http(url: str, method: str = "GET", path: str = "/", *, body: bytes = b"",
               headers: dict[str, str] | None = None,
               source: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request over a fresh connection (``connection: close``); status, headers, body.

    ``Host`` is the URL's, as a browser sends it; ``headers`` may replace it. ``source``: the
    client's own address (any 127.x.y.z on Linux), to be another client."""
    head = {"host": urlsplit(url).netloc, "connection": "close", **(headers or {})}
    if body or method in ("PUT", "POST"):
        head["content-length"] = str(len(body))
    raw = f"{method} {path} HTTP/1.1\r\n".encode()
    raw += b"".join(f"{k}: {v}\r\n".encode() for k, v in head.items()) + b"\r\n" + body
    return parse_response(await exchange(url, raw, source=source))


async def exchange(url: str, raw: bytes, *, source: str | None = None) -> bytes:
    """Send raw bytes, read until the server closes."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(
        parts.hostname, parts.port, local_addr=None if source is None else (source, 0))
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def pair(node: GatewayNode | Any) -> str:
    """Pair the owner as ``gridpeer dashboard pair`` does; the token it would print."""
    credential, token = OwnerCredential.new()
    CredentialFile(path=node.config.state_dir / CREDENTIAL_FILE).save(credential)
    return token


async def try_login(url: str, token: str, *,
                    source: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """``POST /api/login`` with ``token``, as the page's login form sends it."""
    return await http(url, "POST", "/api/login", body=json.dumps({"token": token}).encode(),
                      headers={"content-type": "application/json"}, source=source)


async def login(url: str, token: str, *, source: str | None = None) -> str:
    """Log in with ``token``; the ``Cookie`` header value of the session."""
    status, headers, body = await try_login(url, token, source=source)
    assert status == 200, body
    return headers["set-cookie"].split(";")[0]


async def next_response(reader: asyncio.StreamReader) -> bytes:
    """The next whole response on a keep-alive connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    return head + await reader.readexactly(length)


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert len(body) == int(headers["content-length"]), (headers, body)
    return status, headers, body
