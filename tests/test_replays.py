"""A sealed requestState is accepted once, remembered until it expires, and junk is not remembered.

The replay through a real client and server is in test_guardrails.py
(test_a_confirmation_answers_one_publish_however_often_it_is_replayed)."""

from typing import Any

import pytest
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult

from mcpmqtt.server.replays import SingleUseRequestState

pytestmark = pytest.mark.anyio


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def call(state: str) -> ServerRequestContext[Any, Any]:
    return ServerRequestContext(
        method="tools/call",
        params={"name": "mqtt_publish", "arguments": {}, "requestState": state},
        session=None,  # type: ignore[arg-type]
        lifespan_context={},
        protocol_version="2026-07-28",
    )


async def handled(ctx: ServerRequestContext[Any, Any]) -> CallToolResult:
    return CallToolResult(content=[])


async def rejected(ctx: ServerRequestContext[Any, Any]) -> CallToolResult:
    raise MCPError(INVALID_PARAMS, "Invalid or expired requestState", {"reason": "invalid_request_state"})


def refused(result: object) -> bool:
    return isinstance(result, CallToolResult) and result.is_error


async def test_a_state_is_refused_the_second_time_until_it_has_expired() -> None:
    clock = Clock()
    once = SingleUseRequestState(ttl=600, clock=clock)
    assert not refused(await once(call("a"), handled))
    assert refused(await once(call("a"), handled))
    assert not refused(await once(call("b"), handled))
    clock.now = 601  # the SDK refuses it as expired from now on; it need not be remembered
    assert not refused(await once(call("a"), handled))


async def test_a_state_the_sdk_rejects_is_not_remembered() -> None:
    once = SingleUseRequestState()
    for _ in range(2):
        with pytest.raises(MCPError):
            await once(call("junk"), rejected)
    assert not refused(await once(call("junk"), handled))


async def test_when_full_a_new_state_is_refused_rather_than_an_old_one_forgotten() -> None:
    once = SingleUseRequestState(capacity=1)
    assert not refused(await once(call("a"), handled))
    assert refused(await once(call("b"), handled))
    assert refused(await once(call("a"), handled))
