"""The names the dashboard answers to: its defence against DNS rebinding and cross-site requests.

A web page anywhere can make the owner's browser send requests into the home network in two ways.
A cross-site request carries the page's own site in ``Origin``. A DNS rebinding points the page's
own name at the gateway's address, so the browser takes the request for same-origin: ``Host`` and
``Origin`` then both carry the attacker's name. Both are refused by name, on every request:

* ``Host`` must name this gateway: ``localhost``, the Pi's host name (also with ``.local``, as
  mDNS announces it), a name the owner configured (``[dashboard] allowed_hosts``), or a literal IP
  address (a rebinding needs a name its author controls, so an address cannot be one);
* ``Origin``, when the browser sends one, must be the same origin as ``Host``.

``check`` is pure (header values in, a refusal or None out); parsing never raises, whatever the
bytes.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")
_DEFAULT_PORT = {"http": 80, "https": 443}

Authority = tuple[str, int | None]
"""A ``Host`` value parsed: lower-case name or IP literal (IPv6 without brackets), and the port."""


def parse_authority(value: str) -> Authority | None:
    """``host[:port]`` or ``[v6]:port`` as the ``Host`` header has it; None when malformed."""
    if value.startswith("["):
        literal, bracket, rest = value[1:].partition("]")
        if not bracket or ":" not in literal or not _is_ip(literal):
            return None
        if rest and not rest.startswith(":"):
            return None
        host, port_text = literal.lower(), rest[1:] if rest else None
    else:
        host, colon, port_text = value.rpartition(":")
        if not colon:
            host, port_text = value, None
        host = host.lower().removesuffix(".")
        if not _NAME.fullmatch(host):
            return None
    if port_text is None:
        return host, None
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        return None
    port = int(port_text)
    return (host, port) if 0 < port <= 65535 else None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was refused by name: ``reason`` is the counted label, ``status`` the 4xx."""

    reason: str
    status: int
    message: str


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """The gateway's own names; any IP literal is accepted besides them."""

    names: frozenset[str]

    @classmethod
    def for_gateway(cls, *, configured: Iterable[str] = (), bind_host: str = "") -> HostPolicy:
        """``localhost``, this machine's host name (and ``NAME.local``), the configured names and
        the name the dashboard is bound to."""
        hostname = socket.gethostname().lower().removesuffix(".")
        names = {"localhost", hostname, f"{hostname.split('.')[0]}.local", bind_host.lower(),
                 *(name.lower().removesuffix(".") for name in configured)}
        return cls(names=frozenset(n for n in names if n and _NAME.fullmatch(n)))

    def allows(self, host: str) -> bool:
        return host in self.names or _is_ip(host)

    def check(self, host: str | None, origin: str | None) -> Refusal | None:
        """None when ``Host`` names this gateway and ``Origin`` (if any) is that same origin."""
        if host is None:
            return Refusal("missing-host", 400, "the request has no Host header")
        authority = parse_authority(host.strip())
        if authority is None:
            return Refusal("bad-host", 400, "the Host header is not a host name or address")
        if not self.allows(authority[0]):
            return Refusal("foreign-host", 421,
                           f"this gateway does not answer to {authority[0]!r}: open it by its "
                           "own name or address, or add the name to [dashboard] allowed_hosts")
        if origin is not None and not _same_origin(origin.strip(), authority):
            return Refusal("foreign-origin", 403,
                           "cross-site request refused: the page is not this gateway's own")
        return None


def _same_origin(origin: str, authority: Authority) -> bool:
    """``Origin`` names the same host and port as ``Host`` (the port defaults by the scheme)."""
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme.lower() not in _DEFAULT_PORT:
        return False  # also "null": sandboxed frames, file:// pages, redirects across sites
    theirs = parse_authority(rest)
    if theirs is None:
        return False
    default = _DEFAULT_PORT[scheme.lower()]
    return (theirs[0], theirs[1] or default) == (authority[0], authority[1] or default)
