"""The Host and Origin checks of the HTTP transports, exact: the defence against DNS rebinding.

The SDK's own check compares by prefix, so `Origin: http://127.0.0.1:1@evil.com` passed as an origin
on 127.0.0.1, and of two Origin headers only the first was looked at. Here each value is parsed
into scheme, host and port and compared whole, a value of any other form is refused, and a request
that carries either header twice is refused (400) whatever the values.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from starlette.responses import PlainTextResponse, Response
from starlette.types import Scope

log = logging.getLogger(__name__)

_NAME = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)"
_HOST = re.compile(_NAME + r"(?::(\d{1,5}))?")
_ORIGIN = re.compile(r"(https?)://" + _NAME + r"(?::(\d{1,5}))?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Place:
    """A host name with a port, or with None for any port; for origins, also a scheme."""

    name: str
    port: int | None
    scheme: str = ""

    def admits(self, other: Place) -> bool:
        return (self.scheme, self.name) == (other.scheme, other.name) and self.port in (None, other.port)


def parse_host(value: str) -> Place | None:
    """`name[:port]` (a port-less value is any port), or None when the value is no such thing."""
    match = _HOST.fullmatch(value)
    if match is None:
        return None
    return Place(match[1].lower(), _port(match[2]))


def parse_origin(value: str, *, any_port: bool = False) -> Place | None:
    """`scheme://name[:port]`, with the scheme's default port when none is given (as browsers send
    it); None when the value is no such thing, `null` included."""
    match = _ORIGIN.fullmatch(value)
    if match is None:
        return None
    port = None if any_port else (_port(match[3]) or _DEFAULT_PORTS[match[1]])
    return Place(match[2].lower(), port, match[1])


def _port(text: str | None) -> int | None:
    return int(text) if text else None


class HostOriginGuard:
    """Admits a request whose single Host is one of `hosts` and whose Origin, if any, is one of
    `origins`; else the refusal: 400 for a repeated header, 421 for the Host, 403 for the Origin."""

    def __init__(self, hosts: list[Place], origins: list[Place]) -> None:
        self._hosts = hosts
        self._origins = origins

    def refusal(self, scope: Scope) -> Response | None:
        hosts = _values(scope, b"host")
        origins = _values(scope, b"origin")
        if len(hosts) > 1 or len(origins) > 1:
            log.warning("refused a request with %d Host and %d Origin headers", len(hosts), len(origins))
            return PlainTextResponse("Repeated Host or Origin header", status_code=400)
        host = parse_host(hosts[0]) if hosts else None
        if host is None or not any(allowed.admits(host) for allowed in self._hosts):
            return self._refuse("Host", hosts, 421)
        if origins:
            origin = parse_origin(origins[0])
            if origin is None or not any(allowed.admits(origin) for allowed in self._origins):
                return self._refuse("Origin", origins, 403)
        return None

    @staticmethod
    def _refuse(what: str, values: list[str], status: int) -> Response:
        log.warning("refused a request with the %s header %r", what, values[0] if values else None)
        return PlainTextResponse(f"Invalid {what} header", status_code=status)


def _values(scope: Scope, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope["headers"] if key.lower() == name]
