"""mqtt_approval: the agent learns what became of a publish that waited for a person in the console."""

import asyncio
import contextlib
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult
from pydantic import Field

from mcpmqtt.rules.payloads import iso_utc
from mcpmqtt.server.approvals import Approval, ApprovalQueue
from mcpmqtt.server.context import Runtime
from mcpmqtt.server.events import caller_owner
from mcpmqtt.server.labels import labelled
from mcpmqtt.server.results import ApprovalResult, PublishResult, QueryResult, ok_result

APPROVAL_DESCRIPTION = (
    "Learn the outcome of a publish that waits for a person's approval in the operator console: give "
    "the approval_id from the mqtt_publish result. status is pending (nobody decided yet; nothing was "
    "sent), published (see result), rejected or expired (never sent), or failed (approved, but the "
    "publish failed: see error). wait > 0 waits up to that many seconds for a decision. Only the "
    "caller who made the publish can ask about it."
)


def approval_result(approval: Approval) -> ApprovalResult:
    """What mqtt_approval reports of one approval."""
    result = approval.result if isinstance(approval.result, PublishResult | QueryResult) else None
    return ApprovalResult(
        approval_id=approval.id,
        status=approval.status,
        topic=approval.topic,
        qos=approval.qos,
        retain=approval.retain,
        bytes=len(approval.payload),
        requested_at=iso_utc(approval.created),
        expires_at=iso_utc(approval.expires) if approval.status == "pending" else None,
        decided_by=approval.decided_by,
        decided_at=iso_utc(approval.decided_at) if approval.decided_at is not None else None,
        result=result,
        error=str(approval.error) if approval.error is not None else None,
    )


def register_approval_tool(server: MCPServer[Any], runtime: Runtime, queue: ApprovalQueue) -> None:
    """Add mqtt_approval to `server`."""
    most = runtime.limits.max_timeout

    @server.tool(
        description=APPROVAL_DESCRIPTION,
        **labelled(
            "Outcome of an approval", read_only=True, destructive=False, idempotent=True, open_world=False
        ),
    )
    async def mqtt_approval(
        approval_id: Annotated[str, Field(max_length=64, description="The approval_id mqtt_publish gave.")],
        ctx: Context[Any, Any],
        wait: Annotated[
            float,
            Field(
                ge=0, le=most, description=f"Seconds to wait for a decision while pending (0 to {most:g})."
            ),
        ] = 0.0,
    ) -> Annotated[CallToolResult, ApprovalResult]:
        """Learn the outcome of a publish that waits for a person's approval in the operator console."""
        approval = queue.owned(approval_id, caller_owner(ctx))
        if wait > 0 and approval.status in ("pending", "approved"):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(approval.settled.wait(), wait)
        return ok_result(approval_result(approval))
