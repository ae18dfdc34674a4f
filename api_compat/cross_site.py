"""Cross-site protection and CORS: one middleware, outermost on the main application and on the
WebSocket's own, so nothing (auth, handlers, the WebSocket upgrade) runs for a refused request.

A listener on loopback is reachable from every web page the user opens. A page elsewhere can send
a "simple" POST (`Content-Type: text/plain`, no preflight), open a WebSocket, or rebind its own DNS
name to 127.0.0.1 and become same-origin with us. So, on every request:

- `Origin`, when present, must be an allowed origin: the listener's own (`http://NAME:PORT` for a
  name it answers to and the port the request came in on; also exactly the origin of the `Host`
  asked for, so a page behind an `ssh -L` tunnel works) or one of `cors_origins` (`*`: any).
  `Origin: null` (sandboxed frames, `file:` pages) is always refused. No `Origin`: a program (curl,
  Python, the remote TUI) or a same-origin GET; it passes.
- `Host` must be a name the listener answers to: the bound address, `localhost`, a loopback address,
  or one of `allowed_hosts`; any port (tunnels and proxies change it). A listener bound to a
  wildcard address (0.0.0.0, ::) with auth on answers any `Host`: its clients use names we cannot
  know, and a rebound page has no token to send.
- A request with a body must carry the content type its route documents (`RouteDoc.body_content_type`,
  else `application/json`): a browser cannot send `application/json` across origins without a
  preflight, which we answer only for allowed origins.

Refusals are 403 (origin, host) and 415 (content type) in the error body of the surface that owns
the path (`Surface.refusal`).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from api_compat.config import ApiConfig
from api_compat.state import SURFACES
from api_compat.surface import Handler, Owners, Surface

_CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
_CORS_HEADERS = "Authorization, Content-Type"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: `Host` values whose check is remembered (a listener is asked for a few: its address, localhost)
_HOSTS_REMEMBERED = 64


def normalize_host(name: str) -> str:
    """A host name or address as compared here: lower case, without the trailing dot of a fully
    qualified name and without the brackets of an IPv6 literal."""
    name = name.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name


def split_host(value: str) -> tuple[str, int | None] | None:
    """`Host` header (`name`, `name:port`, `[v6]:port`) -> (normalized name, port); None if malformed."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else ""
    elif value.count(":") == 1:
        name, port_text = value.split(":")
    elif ":" in value:
        return None  # an unbracketed IPv6 literal is not a valid Host
    else:
        name, port_text = value, ""
    if not name:
        return None
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or int(port_text) > 65535:
            return None
        port = int(port_text)
    return normalize_host(name), port


class CrossSitePolicy:
    """Which origins and hosts one listening socket accepts. `bound_host` is the address it is bound
    to (the API's or the WebSocket's own)."""

    def __init__(self, config: ApiConfig, bound_host: str) -> None:
        bound = normalize_host(bound_host)
        self.any_host = bound in _WILDCARDS and config.auth_enabled
        self.names = set(_LOOPBACK_NAMES) | {normalize_host(h) for h in config.allowed_hosts}
        if bound not in _WILDCARDS:
            self.names.add(bound)
        self.cors_any = "*" in config.cors_origins
        self.cors = frozenset(o.strip().rstrip("/").lower() for o in config.cors_origins if o.strip() != "*")
        self._hosts: dict[str, tuple[tuple[str, int | None] | None, bool]] = {}

    def checked_host(self, raw_host: str) -> tuple[tuple[str, int | None] | None, bool]:
        """(the `Host` header split, whether it is allowed); remembered for the few `Host`s a
        listener is asked for (any value: a bounded memory of them)."""
        known = self._hosts.get(raw_host)
        if known is None:
            host = split_host(raw_host)
            known = (host, host is not None and self.host_allowed(host[0]))
            if len(self._hosts) >= _HOSTS_REMEMBERED:
                self._hosts.clear()
            self._hosts[raw_host] = known
        return known

    def host_allowed(self, name: str) -> bool:
        if self.any_host or name in self.names:
            return True
        # an address literal cannot be rebound: only a loopback one is ours, whatever its form
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    def origin_allowed(self, origin: str, host: tuple[str, int | None] | None, local_port: int | None) -> bool:
        """`host`: the request's `Host` when it passed the check against our names (else None)."""
        origin = origin.strip().rstrip("/").lower()
        if origin == "null":
            return False
        if origin in self.cors or self.cors_any:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path or parts.query:
            return False
        try:
            port = parts.port or _DEFAULT_PORTS[parts.scheme]
        except ValueError:
            return False
        name = normalize_host(parts.hostname)
        if name in self.names and port == local_port:
            return True
        # same origin as the URL the browser asked for, under a name we answer to: a tunnel
        return host is not None and host[0] == name and (host[1] or _DEFAULT_PORTS[parts.scheme]) == port


def _local_port(request: web.Request) -> int | None:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(sockname, tuple) and len(sockname) >= 2 and isinstance(sockname[1], int):
        return sockname[1]
    return None


def _owner(request: web.Request) -> Surface | None:
    surfaces = request.app.get(SURFACES, [])  # read first: as an argument, mypy infers the key's type
    return Owners(surfaces).owner(request)


def _refuse(request: web.Request, status: int, message: str) -> web.StreamResponse:
    surface = _owner(request)
    if surface is not None and surface.refusal is not None:
        return surface.refusal(message, status, None)
    return web.json_response({"error": message}, status=status)


def _documented_body_types(app: web.Application) -> dict[tuple[str, str], str]:
    """(method, path pattern) -> the content type the route documents for its body."""
    types: dict[tuple[str, str], str] = {}
    for surface in app.get(SURFACES, []):
        for doc in surface.routes:
            types.setdefault((doc.method, doc.path),
                             doc.body_content_type if doc.body is not None else "application/json")
    return types


def cross_site_middleware(config: ApiConfig, bound_host: str) -> Middleware:
    policy = CrossSitePolicy(config, bound_host)
    body_types: dict[tuple[str, str], str] | None = None

    @web.middleware
    async def cross_site(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal body_types
        # no Host at all: HTTP/1.0 from a program; every browser sends one
        raw_host = request.headers.get("Host")
        host, allowed = policy.checked_host(raw_host) if raw_host is not None else (None, True)
        if not allowed:
            return _refuse(request, 403, "this server does not answer to that Host name (a DNS-rebinding "
                                         "page?); a name of your own goes in STEPFLOW_ALLOWED_HOSTS")
        origin = request.headers.get("Origin")
        if origin is not None:
            checked_host = host if not policy.any_host else None
            if not policy.origin_allowed(origin, checked_host, _local_port(request)):
                return _refuse(request, 403, "requests from that origin are refused; a web UI's origin "
                                             "goes in STEPFLOW_CORS_ORIGINS")
            if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
                preflight = web.Response(status=204)
                preflight.headers["Access-Control-Allow-Methods"] = _CORS_METHODS
                preflight.headers["Access-Control-Allow-Headers"] = request.headers.get(
                    "Access-Control-Request-Headers", _CORS_HEADERS)
                preflight.headers["Access-Control-Max-Age"] = "600"
                return _allow(preflight, origin, policy)
        if request.method in _BODY_METHODS and request.body_exists:
            match_info = request.match_info
            if match_info.http_exception is None:
                if body_types is None:
                    body_types = _documented_body_types(request.app)
                resource = match_info.route.resource
                pattern = resource.canonical if resource is not None else request.path
                expected = body_types.get((request.method, pattern), "application/json")
                if request.content_type != expected:
                    response = _refuse(request, 415, f"{request.method} {pattern} takes a body of type "
                                                     f"{expected}, not {request.content_type}")
                    return _allow(response, origin, policy) if origin is not None else response
        response = await handler(request)
        if origin is not None and not response.prepared:
            _allow(response, origin, policy)
        return response

    return cross_site


def _allow(response: web.StreamResponse, origin: str, policy: CrossSitePolicy) -> web.StreamResponse:
    explicit = origin.strip().rstrip("/").lower() in policy.cors
    response.headers["Access-Control-Allow-Origin"] = "*" if policy.cors_any and not explicit else origin
    if response.headers["Access-Control-Allow-Origin"] != "*":
        response.headers["Vary"] = "Origin"
    return response
