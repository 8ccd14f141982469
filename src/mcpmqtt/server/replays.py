"""One answer, one use: each sealed ``requestState`` the server issues is accepted once.

In the 2026-07-28 era the question before a guarded publish ends the first call with an
``InputRequiredResult`` carrying a sealed ``requestState``; the client calls again with the person's
answer and that state, and the publish goes out. The SDK checks the seal, the expiry and that the
state belongs to the same tool and arguments, but not whether it was used before: the same answer
and state, sent three times, published three times with one person's yes.

This middleware sits outside the SDK's seal and remembers every state that came back, until it
expires (the SDK then refuses it anyway, so the memory is bounded by what one lifetime can hold). A
state seen before is refused. A state the SDK refuses as invalid is forgotten again, so that junk sent
by a client cannot fill the memory. Each round of questions is sealed anew (with a fresh nonce), so a
state legitimately comes back once.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from mcp_types.methods import INPUT_REQUIRED_METHODS

from mcpmqtt.errors import PermissionDenied
from mcpmqtt.server.results import error_result

REQUEST_STATE_TTL: Final = 600.0
"""Seconds a sealed requestState stays valid (the SDK's default, set explicitly so both agree)."""

_CAPACITY = 100_000
_REUSED = (
    "this confirmation was already used: one answer allows one call, and this "
    "requestState came back before; call the tool again without requestState to ask the person again"
)
_FULL = "too many confirmations are being answered at once ({count}); try again in a minute"


class SingleUseRequestState:
    """Server middleware (install it outermost, before the SDK's seal check): refuses a reused state."""

    def __init__(
        self,
        ttl: float = REQUEST_STATE_TTL,
        capacity: int = _CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._clock = clock
        self._used: OrderedDict[bytes, float] = OrderedDict()  # digest -> when it may be forgotten

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        state = (
            ctx.params.get("requestState") if ctx.method in INPUT_REQUIRED_METHODS and ctx.params else None
        )
        if not isinstance(state, str):
            return await call_next(ctx)
        digest = hashlib.sha256(state.encode("utf-8", "surrogatepass")).digest()
        if refusal := self._use(digest):
            if ctx.method == "tools/call":
                return error_result(refusal)
            raise MCPError(INVALID_PARAMS, str(refusal))
        try:
            return await call_next(ctx)
        except MCPError as exc:
            if exc.code == INVALID_PARAMS and exc.data == {"reason": "invalid_request_state"}:
                self._used.pop(digest, None)  # not a state we issued: nothing to remember
            raise

    def _use(self, digest: bytes) -> PermissionDenied | None:
        """Mark a state used; the refusal text if it was used before (or there is no room)."""
        now = self._clock()
        while self._used and next(iter(self._used.values())) <= now:
            self._used.popitem(last=False)
        if digest in self._used:
            return PermissionDenied(_REUSED)
        if len(self._used) >= self.capacity:
            return PermissionDenied(_FULL.format(count=len(self._used)))
        self._used[digest] = now + self.ttl
        return None
