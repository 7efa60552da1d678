"""The dashboard's routes as a plain function: ``DashboardApp.handle(Request) -> Response``.

No sockets here: the HTTP/1.1 framing, limits and connections live in ``http.py``, so every route,
every validation error and every status code can be tested by calling ``handle`` directly, and the
adapter can be swapped without touching a route. Errors are JSON ``{"error": ..., ...}`` with a
specific 4xx status; nothing a client sends can produce a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from gateway.dashboard import metrics
from gateway.dashboard.preferences import OwnerPreferences, PreferencesStore
from gateway.dashboard.status import DashboardNode, build_status

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
    """Routes of one gateway's dashboard; owns the current preferences and their file."""

    def __init__(self, *, node: DashboardNode) -> None:
        self._node = node
        self._store = PreferencesStore(path=node.config.state_dir / "preferences.json")
        self.preferences = OwnerPreferences.from_config(node.config.preferences)
        static = resources.files("gateway.dashboard") / "static"
        self._static = {
            path: (static.joinpath(name).read_bytes(), kind)
            for path, (name, kind) in _STATIC.items()
        }
        handlers: dict[str, dict[str, Callable[[Request], Response]]] = {
            "/api/status": {"GET": self._status},
            "/api/preferences": {"GET": self._get_preferences, "PUT": self._put_preferences},
            "/metrics": {"GET": self._metrics},
        }
        for path in self._static:
            handlers[path] = {"GET": self._file}
        self._routes = handlers

    def restore_preferences(self) -> None:
        """Apply the preferences saved by an earlier run, which outrank the config file's."""
        saved = self._store.load()
        if saved is not None:
            self.preferences = saved
            self._node.update_preferences(saved.to_config())

    def handle(self, request: Request) -> Response:
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

    def _file(self, request: Request) -> Response:
        body, kind = self._static[urlsplit(request.target).path]
        return Response(status=200, body=body, content_type=kind,
                        headers=(("content-security-policy", _CSP),))

    def _status(self, _request: Request) -> Response:
        return Response.json(200, build_status(self._node))

    def _metrics(self, _request: Request) -> Response:
        text = metrics.render(build_status(self._node))
        return Response(status=200, body=text.encode(), content_type=metrics.CONTENT_TYPE)

    def _get_preferences(self, _request: Request) -> Response:
        return Response.json(200, self.preferences.model_dump())

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
