"""What `llm-tuning serve` lets in, checked before any route runs.

    llm-tuning serve --host 0.0.0.0 --allowed_hosts my-box.lan --cors_origins http://localhost:3000

A server on 127.0.0.1 without a key can still be driven by any web page the user opens: by DNS
rebinding (the page's own name resolves to 127.0.0.1, so the browser sends `Host: evil.example`) or by
a cross-site request (a form or a `text/plain` fetch needs no CORS preflight). So every request must
name an allowed Host (loopback, --host, --allowed_hosts); a request from a web page (it carries an
`Origin`) must come from the page's own origin or one of --cors_origins; a POST body must be
`application/json` (which a cross-site page cannot send without a preflight, which is refused); then
the API key on /v1 and the body size. Refusals are OpenAI-shaped JSON errors.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.responses import JSONResponse

from llm_tuning.config import ConfigError
from llm_tuning.infer.openai_api import ApiError

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
ANY = "*"


def _split(value: object) -> list[str]:
    """Flag values, repeated or comma-separated; a YAML recipe may also give one string (or number)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def check_hosts(value: object) -> list[str]:
    """`--allowed_hosts a.lan,b.lan`: bare names or addresses (no scheme, port or path), or `*`."""
    hosts = _split(value)
    for host in hosts:
        if host != ANY and any(c in host for c in "/:@ ") and not host.startswith("["):
            raise ConfigError(f"--allowed_hosts {host!r}: give a bare host name or address such as "
                              "my-box.lan or 192.168.1.5 (no scheme, port or path), or *")  # fmt: skip
    return [host_name(h) if h != ANY else ANY for h in hosts]


def check_origins(value: object) -> list[str]:
    """`--cors_origins http://localhost:3000`: scheme://host[:port] exactly as browsers send it, or `*`."""
    origins = [o.rstrip("/") for o in _split(value)]
    for origin in origins:
        parts = urlsplit(origin)
        if origin != ANY and (parts.scheme not in ("http", "https") or not parts.netloc or parts.path
                              or parts.query or parts.fragment):  # fmt: skip
            raise ConfigError(f"--cors_origins {origin!r}: give an origin such as http://localhost:3000 "
                              "(scheme, host and port, no path), or *")  # fmt: skip
    return [o.lower() for o in origins]


def host_name(host: str) -> str:
    """The name in a Host header: `[::1]:8000` -> `::1`, `Example.COM.:80` -> `example.com`."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def allowed_hosts(bind: str, extra: list[str]) -> frozenset[str]:
    """Loopback names, the bound address (the machine's name when bound to every interface), and `extra`."""
    hosts = {*LOOPBACK_HOSTS, *extra}
    if bind in ("0.0.0.0", "::", ""):
        hosts.add(socket.gethostname().lower())
    else:
        hosts.add(host_name(bind))
    return frozenset(hosts)


@dataclass(frozen=True)
class Policy:
    hosts: frozenset[str]
    cors_origins: frozenset[str]
    api_key: str | None
    max_request_bytes: int
    key_prefix: str = "/v1"  # paths that need the key (the board's are under /api)


class Guard:
    """Pure ASGI middleware (it leaves `receive` alone, so routes can still see a client leave)."""

    def __init__(self, app: ASGIApp, policy: Policy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            self.check(scope["method"], scope["path"], headers)
        except ApiError as err:
            extra = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
            return await JSONResponse(err.body(), err.status, headers=extra)(scope, receive, send)
        await self.app(scope, receive, send)

    def check(self, method: str, path: str, headers: dict[str, str]) -> None:
        policy, host = self.policy, headers.get("host")
        known = host is None or ANY in policy.hosts or host_name(host) in policy.hosts
        if not known and path != "/health":  # /health tells nothing; probes often use the pod's address
            raise ApiError(403, f"Host {host!r} is not served here (a DNS-rebinding guard); start the server "
                           f"with --allowed_hosts {host_name(host)} if clients use that name",
                           "host", "host_not_allowed")  # fmt: skip
        origin = headers.get("origin")
        if origin is not None and not self.origin_allowed(origin, host):
            raise ApiError(403, f"requests from web pages at {origin} are refused (cross-origin); start the "
                           f"server with --cors_origins {origin} to allow them", "origin", "origin_not_allowed")  # fmt: skip
        if method == "OPTIONS":  # a CORS preflight carries no key or body; CORSMiddleware answers it
            return
        if path.startswith(policy.key_prefix) and policy.api_key:
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {policy.api_key}".encode()):
                raise ApiError(401, "missing or wrong API key: send `Authorization: Bearer KEY`",
                               code="invalid_api_key")  # fmt: skip
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > policy.max_request_bytes:
            raise ApiError(413, f"the request body is over {policy.max_request_bytes} bytes",
                           code="request_too_large")  # fmt: skip
        kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if method in ("POST", "PUT", "PATCH") and kind != "application/json":
            raise ApiError(415, f"send the body as JSON with `Content-Type: application/json` (got {kind or 'none'!r})",
                           "content-type", "unsupported_media_type")  # fmt: skip

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        origin = origin.strip().rstrip("/").lower()
        same = host is not None and urlsplit(origin).netloc == host.strip().lower()
        return same or origin in self.policy.cors_origins or ANY in self.policy.cors_origins


def is_loopback(host: str) -> bool:
    """Whether --host keeps the server on this machine (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
