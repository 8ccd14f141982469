"""Who may call the HTTP transports: API keys and OAuth 2.1 access tokens (JWTs), checked for the SDK's
bearer-token middleware, and the allowlist each caller gets.

Both verifiers implement the SDK's `TokenVerifier` and return an `Access`, the SDK's `AccessToken` plus
the caller's allowlist when its key or token is narrowed to part of the configured one. The SDK's
`AuthContextMiddleware` puts it in a context variable for the request, which is where
`Runtime.policy()` finds it. A token is only ever compared and decoded here: nothing of it reaches
the broker, whose credentials are the server's own.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import jwt
from mcp.server.auth.provider import AccessToken, TokenVerifier

from mcpmqtt.config.apikeys import KeyHash
from mcpmqtt.config.http import ApiKey, HttpSettings, OAuthSettings
from mcpmqtt.rules.grants import Grant, limits_of, narrow
from mcpmqtt.rules.policy import Allowlist
from mcpmqtt.server.context import Access

log = logging.getLogger(__name__)

_CACHE_SIZE = 1024
# scrypt takes 32 MiB and ~0.1 s per check: two at a time bounds the memory and CPU that a flood of
# wrong keys can take, while the event loop keeps serving callers whose key is already known.
_HASHING_THREADS = 2
# Unknown tokens waiting for a check, per client and in all; past these a token is refused unchecked.
_WAITING_PER_CLIENT = 8
_WAITING_IN_ALL = 256
_JWKS_TIMEOUT = 10.0
_JWKS_MAX_AGE = 600.0
_JWKS_MIN_INTERVAL = 30.0


refusal: ContextVar[str | None] = ContextVar("mcpmqtt_bearer_refusal", default=None)
"""Why the bearer token just checked in this context was refused, for the 401 to say (the SDK's
verifier interface can only answer None)."""


def _refused(why: str) -> None:
    """Note why the token is refused (see `refusal`); the verifier then answers None."""
    refusal.set(why)


class _Lru:
    """A small bounded mapping, oldest entry dropped first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[bytes, Any] = OrderedDict()

    def get(self, key: bytes) -> Any:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: bytes, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


CLIENT_ADDRESS: ContextVar[str] = ContextVar("mcpmqtt_client_address", default="unknown")
"""The address of the HTTP client being served, set by the HTTP app for the hashing turns."""


class _Turns:
    """`slots` hashing slots, handed to the clients that wait for one in turn.

    A slot goes to the waiting client served least recently (a client not served yet comes first),
    so a client with many tokens waiting delays another client by at most one check, not by all of
    its own. A client may have `per_client` tokens waiting and all clients `in_all`; past that,
    `acquire` says no at once, so that a flood is refused rather than queued.
    """

    def __init__(self, slots: int, per_client: int, in_all: int) -> None:
        self._free = slots
        self._per_client = per_client
        self._in_all = in_all
        self._waiting = 0
        self._queues: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()  # turn order

    async def acquire(self, client: str) -> bool:
        """Wait for a slot (then `release` it); False at once when too many tokens are waiting."""
        if self._free > 0 and not self._queues:
            self._free -= 1
            return True
        queue = self._queues.get(client)
        if (queue is not None and len(queue) >= self._per_client) or self._waiting >= self._in_all:
            return False
        if queue is None:
            queue = self._queues[client] = deque()
            self._queues.move_to_end(client, last=False)  # not served yet: first in turn
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(turn)
        self._waiting += 1
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # given a slot it will not use
            else:
                self._leave(client, turn)
            raise
        return True

    def release(self) -> None:
        """Give the slot to the next client in turn (which goes to the back), or free it."""
        if not self._queues:
            self._free += 1
            return
        client, queue = self._queues.popitem(last=False)
        turn = queue.popleft()
        self._waiting -= 1
        if queue:
            self._queues[client] = queue
        turn.set_result(None)

    def _leave(self, client: str, turn: asyncio.Future[None]) -> None:
        queue = self._queues.get(client)
        if queue is not None and turn in queue:
            queue.remove(turn)
            self._waiting -= 1
            if not queue:
                del self._queues[client]


class ApiKeyVerifier:
    """Accepts the API keys whose hashes are configured.

    Hashing a presented key costs ~0.1 s by design, too much per request: a key that matched once is
    remembered by its HMAC under a secret of this process (so the cache holds nothing usable outside
    it), and so is a key that matched nothing, so that repeating a wrong key costs nothing either.
    New tokens are checked two at a time, clients taking turns (`_Turns`): a flood of made-up tokens
    costs a valid key from another client at most one check's wait, and the flood's excess is
    refused unchecked instead of queued.
    """

    def __init__(self, keys: Sequence[ApiKey], allowlist: Allowlist) -> None:
        self._keys: list[tuple[str, KeyHash, Allowlist | None]] = [
            (key.name, key.key_hash(), _narrowed(allowlist, key.grant(), f"the API key {key.name!r}"))
            for key in keys
        ]
        self._secret = secrets.token_bytes(32)
        self._known = _Lru(_CACHE_SIZE)
        self._rejected = _Lru(_CACHE_SIZE)
        self._turns = _Turns(_HASHING_THREADS, _WAITING_PER_CLIENT, _WAITING_IN_ALL)
        self._pending: dict[bytes, asyncio.Future[tuple[str, Allowlist | None] | None]] = {}

    async def verify_token(self, token: str) -> AccessToken | None:
        tag = hmac.digest(self._secret, token.encode(), hashlib.sha256)
        wrong = "the bearer token is not one of this server's API keys"
        if self._rejected.get(tag) is not None:
            _refused(wrong)
            return None
        entry: tuple[str, Allowlist | None] | None = self._known.get(tag)
        if entry is None:
            entry = await self._check(tag, token)
            if entry is None:
                _refused(wrong)
                return None
        name, allowlist = entry
        return Access(token=token, client_id=f"api-key:{name}", scopes=[], allowlist=allowlist)

    async def _check(self, tag: bytes, token: str) -> tuple[str, Allowlist | None] | None:
        """Hash `token` against every key, once however many requests bring it at the same moment (a
        client opening many connections at start-up would otherwise queue one hashing per request).

        The hashing runs as a task of its own, so that a request that gives up does not waste it.
        """
        task = self._pending.get(tag)
        if task is None:
            task = self._pending[tag] = asyncio.ensure_future(self._hash(tag, token))
            task.add_done_callback(lambda _: self._pending.pop(tag, None))
        return await asyncio.shield(task)

    async def _hash(self, tag: bytes, token: str) -> tuple[str, Allowlist | None] | None:
        client = CLIENT_ADDRESS.get()
        if not await self._turns.acquire(client):
            log.warning("refused a bearer token from %s unchecked: too many tokens wait for a check", client)
            return None
        try:
            entry = await anyio.to_thread.run_sync(self._match, token)
        finally:
            self._turns.release()
        if entry is None:
            self._rejected.put(tag, True)
            log.info("refused a bearer token: it is no configured API key")
        else:
            self._known.put(tag, entry)
        return entry

    def _match(self, token: str) -> tuple[str, Allowlist | None] | None:
        for name, key_hash, allowlist in self._keys:
            if key_hash.matches(token):
                return name, allowlist
        return None


class _Jwks:
    """The issuer's public keys, from a file (read once) or a URL (fetched when needed).

    A URL is fetched on first use, again when a token names a key id it does not hold (keys rotate)
    but at most every 30 s (so that tokens with made-up key ids cannot make us hammer the issuer),
    and at least every 10 minutes (so that a withdrawn key stops working).
    """

    def __init__(self, url: str | None, file: Path | None) -> None:
        self._url = url
        self._keys: jwt.PyJWKSet | None = None
        self._fetched = -_JWKS_MIN_INTERVAL
        self._lock = anyio.Lock()
        if file is not None:
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read the JWKS file {file}: {exc}") from None
            self._keys = _key_set(text, str(file))

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        if self._url is not None and (self._keys is None or time.monotonic() - self._fetched > _JWKS_MAX_AGE):
            await self._refresh()
        key = self._find(kid)
        if key is None and self._url is not None and time.monotonic() - self._fetched > _JWKS_MIN_INTERVAL:
            await self._refresh()
            key = self._find(kid)
        return key

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if self._keys is None:
            return None
        keys = [key for key in self._keys if key.public_key_use in (None, "sig")]
        if kid is None:  # acceptable only when there is no choice to make
            return keys[0] if len(keys) == 1 else None
        return next((key for key in keys if key.key_id == kid), None)

    async def _refresh(self) -> None:
        assert self._url is not None
        async with self._lock:
            if time.monotonic() - self._fetched <= _JWKS_MIN_INTERVAL:
                return  # another request just fetched them
            self._fetched = time.monotonic()
            try:
                async with httpx2.AsyncClient(timeout=_JWKS_TIMEOUT) as client:
                    response = await client.get(self._url)
                    response.raise_for_status()
                self._keys = _key_set(response.text, self._url)
            except (httpx2.HTTPError, ValueError) as exc:
                log.warning("cannot fetch the OAuth signing keys from %s: %s", self._url, exc)


def _key_set(text: str, source: str) -> jwt.PyJWKSet:
    """A JWKS document's usable keys; ValueError names the source when there are none."""
    try:
        return jwt.PyJWKSet.from_dict(json.loads(text))
    except (json.JSONDecodeError, AttributeError, jwt.PyJWTError) as exc:
        raise ValueError(f"{source} is not a JWKS document with usable keys: {exc}") from None


class JwtVerifier:
    """Accepts JWT access tokens of the configured issuer, for this server's audience, unexpired."""

    def __init__(self, settings: OAuthSettings, allowlist: Allowlist) -> None:
        self._settings = settings
        self._allowlist = allowlist
        self._keys = _Jwks(settings.jwks_url, settings.jwks_file)
        self._narrowed: dict[frozenset[str], Allowlist] = {}

    async def verify_token(self, token: str) -> AccessToken | None:
        settings = self._settings
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in settings.algorithms:
                raise jwt.InvalidAlgorithmError(f"algorithm {header.get('alg')!r} is not accepted")
            key = await self._keys.key(header.get("kid"))
            if key is None:
                raise jwt.InvalidKeyError(f"no signing key with id {header.get('kid')!r}")
            claims = jwt.decode(
                token,
                key,
                algorithms=list(settings.algorithms),
                audience=settings.expected_audience,
                issuer=settings.issuer,
                leeway=settings.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            log.info("refused a bearer token: it has expired")
            _refused("the access token has expired; get a new one from the authorization server")
            return None
        except jwt.PyJWTError as exc:
            log.info("refused a bearer token: %s", exc)
            _refused(f"the access token is not valid here: {exc}")
            return None
        scopes = _scopes(claims)
        return Access(
            token=token,
            client_id=str(claims.get("client_id") or claims.get("azp") or claims.get("sub") or "unknown"),
            scopes=scopes,
            expires_at=int(claims["exp"]),
            resource=settings.expected_audience,
            subject=str(claims["sub"]) if "sub" in claims else None,
            claims=claims,
            allowlist=self._allowlist_for(scopes),
        )

    def _allowlist_for(self, scopes: list[str]) -> Allowlist | None:
        mapping = self._settings.scopes
        if mapping is None:
            return None
        granted = frozenset(scope for scope in scopes if scope in mapping)
        if granted not in self._narrowed:
            # No mapped scope: the allowlist's deny entries and nothing else, so every call is refused
            # with the usual explanation rather than an HTTP error the model cannot read.
            grants = [mapping[scope].grant() for scope in sorted(granted)]
            if granted:
                limit = " and ".join(limits_of(grant) for grant in grants)
                holder = f"the token's scopes ({', '.join(sorted(granted))}) limit it to {limit}"
            else:
                holder = (
                    "the token carries none of the scopes that http.oauth.scopes grants "
                    f"({', '.join(sorted(mapping))})"
                )
            self._narrowed[granted] = narrow(self._allowlist, grants, holder)
        return self._narrowed[granted]


def _scopes(claims: dict[str, Any]) -> list[str]:
    """RFC 9068 puts scopes in `scope`, space-separated; some issuers use a list in `scp`."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return scope.split()
    listed = claims.get("scp")
    return [str(s) for s in listed] if isinstance(listed, list) else []


def _narrowed(allowlist: Allowlist, grant: Grant, holder: str) -> Allowlist | None:
    """The allowlist of a key holding `grant`, or None when the grant takes nothing away."""
    if not grant.narrows:
        return None
    return narrow(allowlist, [grant], f"{holder} is limited to {limits_of(grant)}")


class Verifier:
    """API keys and JWTs on one endpoint: a token whose header decodes as a JWT's is one."""

    def __init__(self, keys: ApiKeyVerifier | None, tokens: JwtVerifier | None) -> None:
        self._keys = keys
        self._tokens = tokens

    async def verify_token(self, token: str) -> AccessToken | None:
        if self._tokens is not None and _looks_like_jwt(token):
            return await self._tokens.verify_token(token)
        if self._keys is not None:
            return await self._keys.verify_token(token)
        _refused("the bearer token is not a JWT, and this server takes only OAuth access tokens")
        return None


def _looks_like_jwt(token: str) -> bool:
    if token.count(".") != 2:
        return False
    try:
        jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return False
    return True


def build_verifier(settings: HttpSettings, allowlist: Allowlist) -> TokenVerifier | None:
    """The verifier for the `http` section, or None when it configures no authentication.

    Raises ValueError when a JWKS file cannot be read as one.
    """
    if not settings.authenticated:
        return None
    keys = ApiKeyVerifier(settings.api_keys, allowlist) if settings.api_keys else None
    tokens = JwtVerifier(settings.oauth, allowlist) if settings.oauth is not None else None
    return Verifier(keys, tokens)
