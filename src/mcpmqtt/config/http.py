"""The `http` section of the config file: who may call the HTTP transports, and from where.

Absent, the HTTP transports serve loopback clients only, without authentication (the CLI refuses a
non-loopback bind address then). Every model forbids unknown keys, as in config.py.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from mcpmqtt.config.apikeys import KeyHash, parse_hash
from mcpmqtt.config.base import Model
from mcpmqtt.rules.grants import BOTH, Grant
from mcpmqtt.rules.policy import Permission
from mcpmqtt.rules.topics import filter_problem

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
# Asymmetric algorithms only: with a JWKS of public keys, accepting HS256 would let anyone who has
# the public key sign tokens with it as the shared secret (the classic algorithm-confusion attack).
Algorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
_DEFAULT_ALGORITHMS: tuple[Algorithm, ...] = ("RS256", "ES256")
_BOTH: tuple[Permission, ...] = ("read", "write")
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:\d{1,5})?")


class _Narrowing(Model):
    topics: list[str] | None = Field(
        default=None,
        description="The allowlist patterns (or narrower ones) this grant is limited to; "
        "each must be covered by a pattern of `topics`. Absent: the whole allowlist.",
    )
    permissions: Annotated[list[Permission], Field(min_length=1)] = Field(
        default_factory=lambda: list(_BOTH),
        description="The permissions kept: ['read'] makes a read-only grant.",
    )

    @field_validator("topics")
    @classmethod
    def _topics_are_filters(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or ():
            if problem := filter_problem(pattern):
                raise ValueError(f"{pattern!r}: {problem}")
        return value

    def grant(self) -> Grant:
        """The grant this entry describes."""
        patterns = None if self.topics is None else tuple(self.topics)
        return Grant(patterns, frozenset(self.permissions) & BOTH)


class ApiKey(_Narrowing):
    """One API key: a name for logs, the hash of the key, and what the key is narrowed to."""

    name: str = Field(description="Shown in logs and used as the client id; letters, digits, . _ -")
    hash: str = Field(description="The key's scrypt hash from `mcpmqtt hash-key`; never the key itself.")

    @field_validator("name")
    @classmethod
    def _name_is_plain(cls, value: str) -> str:
        if not _KEY_NAME.fullmatch(value):
            raise ValueError(
                "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return value

    @field_validator("hash")
    @classmethod
    def _is_a_hash(cls, value: str) -> str:
        parse_hash(value)  # raises ValueError with the fix; the value is not echoed (it may be a key)
        return value

    def key_hash(self) -> KeyHash:
        return parse_hash(self.hash)


class ScopeGrant(_Narrowing):
    """What an OAuth scope grants: some allowlist patterns and permissions."""


def _url_problem(url: str, what: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"{what} must be an absolute https:// URL"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return f"{what} must use https:// (plain http:// is accepted only for loopback addresses)"
    return None


def is_loopback(host: str) -> bool:
    """Whether a host name or address is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OAuthSettings(Model):
    """OAuth 2.1 resource-server mode: accept JWT access tokens an authorization server issued for us."""

    issuer: str = Field(description="The authorization server; a token's `iss` must equal it exactly.")
    resource: str = Field(
        description="This server's public MCP URL (e.g. https://mcp.example.net/mcp), published in the "
        "protected-resource metadata (RFC 9728)."
    )
    audience: str | None = Field(
        default=None, description="The `aud` a token must carry; default: `resource` (RFC 8707)."
    )
    jwks_url: str | None = Field(default=None, description="Where the issuer publishes its signing keys.")
    jwks_file: Path | None = Field(default=None, description="A JWKS file, instead of jwks_url.")
    algorithms: Annotated[list[Algorithm], Field(min_length=1)] = Field(
        default_factory=lambda: list(_DEFAULT_ALGORITHMS), description="Signature algorithms accepted."
    )
    required_scopes: list[str] = Field(
        default_factory=list, description="Scopes every token must carry (else 403 insufficient_scope)."
    )
    scopes: dict[str, ScopeGrant] | None = Field(
        default=None,
        description="Narrowing by scope: a token gets the union of what its scopes grant here, and "
        "nothing when it has none of them. Absent: every token gets the whole allowlist.",
    )
    leeway: Annotated[float, Field(ge=0, le=300)] = Field(
        default=30.0, description="Seconds of clock difference tolerated on exp, nbf and iat."
    )

    @field_validator("issuer", "resource", "jwks_url")
    @classmethod
    def _is_a_url(cls, value: str | None) -> str | None:
        if value is not None and (problem := _url_problem(value, "the value")):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError(
                "give exactly one of jwks_url and jwks_file (where the issuer's public keys are)"
            )
        return self

    @property
    def expected_audience(self) -> str:
        return self.audience or self.resource


class HttpSettings(Model):
    """The HTTP transports: Host and Origin checks, authentication, request limits, shutdown."""

    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header values accepted besides loopback ones: 'mcp.example.net' (any port) or "
        "'mcp.example.net:8443'. Requests with another Host get 421.",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origin header values accepted besides loopback ones, e.g. 'https://app.example.net'. "
        "Requests with another Origin get 403; requests without one (non-browser clients) pass.",
    )
    api_keys: list[ApiKey] = Field(
        default_factory=list, description="Keys accepted as Authorization: Bearer."
    )
    oauth: OAuthSettings | None = None
    max_body_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024 * 1024)] = Field(
        default=DEFAULT_MAX_BODY_BYTES, description="Larger request bodies get 413."
    )
    header_timeout: Annotated[float, Field(ge=1, le=3600)] = Field(
        default=10.0,
        description="Seconds a request's headers may take to arrive (from the connection's start or the "
        "previous response); a slower client gets 408 and its connection is closed.",
    )
    body_timeout: Annotated[float, Field(ge=1, le=3600)] = Field(
        default=30.0,
        description="Seconds a request's body may take to arrive after its headers; slower gets 408.",
    )
    session_idle_timeout: Annotated[float, Field(ge=1, le=86400)] = Field(
        default=900.0,
        description="Seconds a 2025-11-25 session may go without requests before it is closed and its "
        "memory freed; its id then answers 404 and the client opens a new session.",
    )
    max_sessions: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=1000,
        description="Open 2025-11-25 sessions at most (about 40 kB each); past it a new session gets 503.",
    )
    max_sessions_per_client: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=100,
        description="Open sessions at most per client (its API key or token when authenticated, else "
        "its address); past it a new session of that client gets 429.",
    )
    shutdown_timeout: Annotated[float, Field(ge=0, le=3600)] = Field(
        default=30.0,
        description="Seconds calls in flight may take to finish after SIGTERM before they are cut off.",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            if not _HOST.fullmatch(host):
                raise ValueError(f"{host!r} is not a host name or address with an optional :port")
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
                raise ValueError(f"{origin!r} is not an origin such as 'https://app.example.net'")
        return value

    @field_validator("api_keys")
    @classmethod
    def _unique_names(cls, value: list[ApiKey]) -> list[ApiKey]:
        names = [key.name for key in value]
        if repeated := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"API key names must be unique; repeated: {', '.join(repeated)}")
        return value

    @property
    def authenticated(self) -> bool:
        """Whether every MCP request must carry a valid API key or token."""
        return bool(self.api_keys) or self.oauth is not None

    def grants(self) -> list[tuple[str, Grant]]:
        """Every grant in this section with where it is, for config errors."""
        located = [(f"http.api_keys[{i}].topics", key.grant()) for i, key in enumerate(self.api_keys)]
        if self.oauth is not None and self.oauth.scopes:
            located += [(f"http.oauth.scopes.{s}.topics", g.grant()) for s, g in self.oauth.scopes.items()]
        return located
