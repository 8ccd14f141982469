"""The console's sign-in: a key (or token) exchanged once for a server-side session behind a cookie.

The browser never keeps the key: it holds an HttpOnly cookie naming a random session id, and the
session here holds what the key grants (its narrowed allowlist, whether it may approve) and a CSRF
token the page sends with every change. Sessions end after `SESSION_SECONDS` (or when the token
they came from expires) and are forgotten with the process.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from mcpmqtt.rules.policy import Allowlist

SESSION_SECONDS = 12 * 3600
_MAX_SESSIONS = 1000


@dataclass(frozen=True)
class ConsoleSession:
    """What one signed-in browser may see and do."""

    who: str
    """The key's or token's client id, or "console" when no authentication is configured."""
    allowlist: Allowlist
    may_approve: bool
    csrf: str
    expires: float

    def visible(self, topic: str) -> bool:
        """Whether this viewer may see anything about `topic`: it may read or write it."""
        return self.allowlist.readable(topic) or self.allowlist.decide("write", topic).allowed

    def csrf_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


class Sessions:
    """The session table: bounded (the oldest session goes first), entries expire."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[str, ConsoleSession] = OrderedDict()

    def create(
        self, who: str, allowlist: Allowlist, may_approve: bool, token_expires: int | None
    ) -> tuple[str, ConsoleSession]:
        """A new session and its id (the cookie's value)."""
        expires = time.time() + SESSION_SECONDS
        if token_expires is not None:
            expires = min(expires, float(token_expires))
        session = ConsoleSession(who, allowlist, may_approve, secrets.token_urlsafe(32), expires)
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = session
        while len(self._sessions) > _MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> ConsoleSession | None:
        if session_id is None:
            return None
        session = self._sessions.get(session_id)
        if session is not None and session.expires <= time.time():
            del self._sessions[session_id]
            return None
        return session

    def end(self, session_id: str | None) -> None:
        if session_id is not None:
            self._sessions.pop(session_id, None)
