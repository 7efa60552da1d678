"""The dashboard's routes as a plain function: ``DashboardApp.handle(Request) -> Response``.

No sockets here: the HTTP/1.1 framing, limits and connections live in ``http.py``, so every route,
every validation error and every status code can be tested by calling ``handle`` directly, and the
adapter can be swapped without touching a route. Errors are JSON ``{"error": ..., ...}`` with a
specific 4xx status; nothing a client sends can produce a traceback.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from gateway.dashboard import metrics
from gateway.dashboard.origin import HostPolicy
from gateway.dashboard.pairing import (
    CREDENTIAL_FILE,
    SESSION_COOKIE,
    SESSION_S,
    CredentialFile,
    cookie_value,
)
from gateway.dashboard.preferences import OwnerPreferences, PreferencesStore
from gateway.dashboard.ratelimit import login_budget
from gateway.dashboard.refusals import Refusals
from gateway.dashboard.status import DashboardNode, StatusView

_JSON = "application/json"
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
# The page loads nothing from anywhere but this gateway: it must work on a Pi with no internet.
_CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""
    client: str = ""
    """The client's address: login attempts are limited per client."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = _JSON
    headers: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def json(cls, status: int, data: Any, *, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        return cls(status=status, body=json.dumps(data).encode(), headers=headers)

    @classmethod
    def error(cls, status: int, message: str, **detail: Any) -> Response:
        return cls.json(status, {"error": message, **detail})


def _field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """One ``{"field", "message"}`` per problem, in the words a form can show next to the input."""
    return [
        {
            "field": ".".join(str(p) for p in err["loc"]) or "(body)",
            "message": "unknown field" if err["type"] == "extra_forbidden"
            else err["msg"].removeprefix("Value error, "),
        }
        for err in exc.errors()
    ]


class DashboardApp:
    """Routes of one gateway's dashboard; owns the current preferences and their file.

    Every request must name this gateway (``origin.HostPolicy``). Reading (the page, status,
    preferences, metrics) needs nothing more: the values are the ones the home's bids already
    publish to the community, and a Prometheus scraper or a wall display has no way to log in.
    Changing anything needs the owner's session (``pairing``).
    """

    def __init__(self, *, node: DashboardNode) -> None:
        self._node = node
        dashboard = node.config.dashboard
        self._hosts = HostPolicy.for_gateway(configured=dashboard.allowed_hosts,
                                             bind_host=dashboard.host)
        self._failed_logins = login_budget()
        self.status = StatusView(node=node)
        self.refusals = Refusals()
        self._store = PreferencesStore(path=node.config.state_dir / "preferences.json")
        self._owner = CredentialFile(path=node.config.state_dir / CREDENTIAL_FILE)
        self.preferences = OwnerPreferences.from_config(node.config.preferences)
        static = resources.files("gateway.dashboard") / "static"
        self._static = {
            path: (static.joinpath(name).read_bytes(), kind)
            for path, (name, kind) in _STATIC.items()
        }
        handlers: dict[str, dict[str, Callable[[Request], Response]]] = {
            "/api/status": {"GET": self._status},
            "/api/preferences": {"GET": self._get_preferences,
                                 "PUT": self._owner_only(self._put_preferences)},
            "/api/session": {"GET": self._session},
            "/api/login": {"POST": self._login},
            "/api/logout": {"POST": self._logout},
            "/metrics": {"GET": self._metrics},
        }
        for path in self._static:
            handlers[path] = {"GET": self._file}
        self._routes = handlers

    async def open(self) -> None:
        """Apply the preferences saved by an earlier run (they outrank the config file's), and
        read the month's earnings once."""
        saved = self._store.load()
        if saved is not None:
            self.preferences = saved
            self._node.update_preferences(saved.to_config())
        await self.status.open()

    def _refuse(self, request: Request, reason: str, status: int, message: str, *,
               headers: tuple[tuple[str, str], ...] = (), **detail: Any) -> Response:
        """Count and log ``reason``; the answer is ``{"error": message, **detail}``."""
        self.refusals.note(reason, client=request.client,
                           detail=f"{request.method} {request.target[:100]}: {message}")
        return Response.json(status, {"error": message, **detail}, headers=headers)

    def handle(self, request: Request) -> Response:
        refusal = self._hosts.check(request.headers.get("host"), request.headers.get("origin"))
        if refusal is not None:
            return self._refuse(request, refusal.reason, refusal.status, refusal.message)
        path = urlsplit(request.target).path
        methods = self._routes.get(path)
        if methods is None:
            return Response.error(404, "not found", path=path)
        handler = methods.get(request.method)
        if handler is None:
            allowed = sorted(methods)
            return Response.json(
                405, {"error": "method not allowed", "method": request.method, "allow": allowed},
                headers=(("allow", ", ".join(allowed)),),
            )
        return handler(request)

    # -- the owner's session ------------------------------------------------------------------

    def _is_owner(self, request: Request) -> tuple[bool, str]:
        """(owner?, why not: "not-paired", "no-session" or "bad-session")."""
        credential = self._owner.load()
        if credential is None:
            return False, "not-paired"
        value = cookie_value(request.headers.get("cookie"))
        if value is None:
            return False, "no-session"
        if not credential.session_valid(value, now_s=time.time()):
            return False, "bad-session"
        return True, ""

    def _owner_only(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def checked(request: Request) -> Response:
            owner, why = self._is_owner(request)
            if owner:
                return handler(request)
            message = _NOT_PAIRED if why == "not-paired" else (
                "log in first: type the owner token from `gridpeer dashboard pair`")
            return self._refuse(request, why, 401, message)

        return checked

    def _session(self, request: Request) -> Response:
        owner, why = self._is_owner(request)
        return Response.json(200, {"paired": why != "not-paired", "owner": owner})

    def _login(self, request: Request) -> Response:
        now = time.time()
        wait_s = self._failed_logins.wait_s(request.client, now_s=now)
        if wait_s > 0:
            retry = math.ceil(wait_s)
            return self._refuse(request, "login-rate-limited", 429,
                               "too many wrong tokens: wait before trying again",
                               retry_after_s=retry, headers=(("retry-after", str(retry)),))
        credential = self._owner.load()
        if credential is None:
            return self._refuse(request, "not-paired", 409, _NOT_PAIRED)
        body = _json_body(request)
        if isinstance(body, Response):
            return body
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not credential.token_matches(token):
            self._failed_logins.spend(request.client, now_s=now)
            return self._refuse(request, "bad-token", 401, "wrong token")
        cookie = (f"{SESSION_COOKIE}={credential.new_session(now_s=now)}; Max-Age={SESSION_S}; "
                  "Path=/; HttpOnly; SameSite=Strict")
        return Response.json(200, {"owner": True}, headers=(("set-cookie", cookie),))

    def _logout(self, _request: Request) -> Response:
        cookie = f"{SESSION_COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict"
        return Response.json(200, {"owner": False}, headers=(("set-cookie", cookie),))

    # -- reading ------------------------------------------------------------------------------

    def _file(self, request: Request) -> Response:
        body, kind = self._static[urlsplit(request.target).path]
        return Response(status=200, body=body, content_type=kind,
                        headers=(("content-security-policy", _CSP),))

    def _status(self, _request: Request) -> Response:
        return Response(status=200, body=self.status.current().body)

    def _metrics(self, _request: Request) -> Response:
        text = metrics.render(self.status.current().page, refusals=self.refusals.counts)
        return Response(status=200, body=text.encode(), content_type=metrics.CONTENT_TYPE)

    def _get_preferences(self, _request: Request) -> Response:
        return Response.json(200, self.preferences.model_dump())

    # -- changing -----------------------------------------------------------------------------

    def _put_preferences(self, request: Request) -> Response:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != _JSON:
            return Response.error(415, "send the preferences as application/json",
                                  content_type=kind or None)
        try:
            prefs = OwnerPreferences.model_validate_json(request.body)
        except ValidationError as exc:
            if any(err["type"] == "json_invalid" for err in exc.errors()):
                return Response.error(400, "body is not valid JSON")
            return Response.error(422, "invalid preferences", fields=_field_errors(exc))
        try:
            self._store.save(prefs)  # saved first: what the node runs with survives a restart
        except OSError as exc:
            return Response.error(507, "preferences could not be saved", detail=exc.strerror)
        self._node.update_preferences(prefs.to_config())
        self.preferences = prefs
        return Response.json(200, prefs.model_dump())


_NOT_PAIRED = ("the gateway has no owner token yet: run `gridpeer dashboard pair` on it and "
               "type the token it prints")


def _json_body(request: Request) -> Any:
    """The JSON body of ``request``, or the 415/400 response that refuses it."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != _JSON:
        return Response.error(415, "send application/json", content_type=kind or None)
    try:
        return json.loads(request.body)
    except (ValueError, RecursionError):
        return Response.error(400, "body is not valid JSON")
