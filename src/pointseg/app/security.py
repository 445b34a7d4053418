"""Who may talk to the app (Jupyter's model): any web page in the analyst's browser can send requests to
localhost, so every request needs the token the server printed, localhost included.

- The token comes in the printed URL (``/?token=...``) and is exchanged for an HttpOnly, SameSite=Strict cookie;
  scripts may send ``Authorization: Bearer <token>``. Without it, ``/api/`` answers 401 JSON and the page 401.
- The ``Host`` header must name the address the server is bound to (a DNS-rebinding page names its own).
- A state-changing request authenticated by the cookie needs an ``Origin`` of the server itself.
- Bodies are limited to ``max_body`` bytes and need a stated length (no chunked uploads).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

COOKIE = "pointseg_token"
CHANGES = {"POST", "PUT", "PATCH", "DELETE"}
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def new_token() -> str:
    return secrets.token_urlsafe(24)


def allowed_hosts(host: str, port: int) -> set[str]:
    """``Host`` values that name the bound address (and ``localhost`` for the loopback address)."""
    names = {host, "localhost"} if host in ("127.0.0.1", "::1", "localhost") else {host}
    return {f"{n}:{port}" for n in names} | {f"[{n}]:{port}" for n in names if ":" in n}


class Guard:
    """ASGI middleware that lets through only requests that pass the checks of the module docstring."""

    def __init__(self, app: App, token: str, host: str, port: int, max_body: int = 1 << 20) -> None:
        self.app, self.token, self.max_body = app, token, max_body
        self.hosts = allowed_hosts(host, port)
        self.origins = {f"http://{h}" for h in self.hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path, method = scope["path"], scope["method"]
        if headers.get("host") not in self.hosts:
            await refuse(send, 403, "the Host header does not name this server", path)
            return
        given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        if path == "/" and given is not None:
            if not secrets.compare_digest(given, self.token):
                await refuse(send, 401, "wrong token: open the URL pointseg app printed", path)
                return
            await send({"type": "http.response.start", "status": 303, "headers": [
                (b"location", b"/"), (b"set-cookie", f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; "
                                                     "Path=/".encode())]})
            await send({"type": "http.response.body", "body": b""})
            return
        by_cookie, by_header = self._cookie_ok(headers), self._bearer_ok(headers)
        if not (by_cookie or by_header):
            await refuse(send, 401, "no token: open the URL pointseg app printed", path)
            return
        if method in CHANGES and not by_header and headers.get("origin") not in self.origins:
            await refuse(send, 403, "a change needs the Origin of this server", path)
            return
        length = headers.get("content-length", "0")
        if "transfer-encoding" in headers or not length.isdigit() or int(length) > self.max_body:
            status = 413 if length.isdigit() else 411
            await refuse(send, status, f"a body needs a length of at most {self.max_body} bytes", path)
            return
        await self.app(scope, receive, send)

    def _cookie_ok(self, headers: dict[str, str]) -> bool:
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is no token
            return False
        morsel = cookie.get(COOKIE)
        return morsel is not None and secrets.compare_digest(morsel.value, self.token)

    def _bearer_ok(self, headers: dict[str, str]) -> bool:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(value.strip(), self.token)


async def refuse(send: Send, status: int, reason: str, path: str) -> None:
    """A JSON error for ``/api/``, plain text elsewhere."""
    if path.startswith("/api/"):
        body, kind = json.dumps({"detail": reason}).encode(), b"application/json"
    else:
        body, kind = f"pointseg app: {reason}\n".encode(), b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
