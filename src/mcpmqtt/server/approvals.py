"""The approval queue: publishes waiting for a person in the operator console.

A publish to a ``confirm`` topic that cannot be put to the person at the MCP client (the client
cannot elicit, or the entry says ``"confirm": "console"``) is queued here with what it would send and
the action that sends it. Each approval moves once from ``pending`` to ``approved`` (then
``published`` or ``failed``), ``rejected`` or ``expired``; the move is made in one step on the event
loop, so an approval sends exactly once, and a rejected or expired one never. Who decided and when
goes to the audit log.

The queue lives in memory: it does not survive a restart (a pending approval is then lost, and
never published).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from mcpmqtt.errors import InvalidArgument, McpMqttError, PermissionDenied
from mcpmqtt.rules.payloads import iso_utc
from mcpmqtt.server.audit import AuditLog

log = logging.getLogger(__name__)

Status = Literal["pending", "approved", "published", "failed", "rejected", "expired"]
Decision = Literal["approve", "reject"]
Listener = Callable[["Approval"], None]


@dataclass(eq=False)
class Approval:
    """One publish waiting for, or past, a person's decision."""

    id: str
    owner: str
    """Whose it is (see events.caller_owner): only they may ask mqtt_approval about it."""
    caller: str
    action: str
    """What waits, in words: "publishing to 'doors/front'" or "sending a request to '…'"."""
    topic: str
    qos: int
    retain: bool
    payload: bytes
    created: float
    expires: float
    send: Callable[[], Awaitable[BaseModel]] = field(repr=False)
    status: Status = "pending"
    decided_by: str | None = None
    decided_at: float | None = None
    result: BaseModel | None = None
    """What the publish returned, once published."""
    error: McpMqttError | None = None
    """Why the approved publish failed (the broker, or a rate limit reached meanwhile)."""
    settled: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    """Set when the approval reaches its final status."""


class ApprovalQueue:
    """Approvals by id, with the listeners (the console) told of every change.

    ``reviewable`` says whether anyone can decide: it is set when the operator console is served.
    Without it, a publish that needs a person and cannot ask one is refused, as before.
    """

    def __init__(
        self,
        ttl: float,
        max_pending: int,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl = ttl
        self.max_pending = max_pending
        self.audit = audit
        self.reviewable = False
        self._clock = clock
        self._approvals: dict[str, Approval] = {}
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with each approval that changed; returns the function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def submit(
        self,
        *,
        owner: str,
        caller: str,
        action: str,
        topic: str,
        qos: int,
        retain: bool,
        payload: bytes,
        send: Callable[[], Awaitable[BaseModel]],
    ) -> Approval:
        """Queue a publish; raises PermissionDenied when approvals.max_pending are waiting already."""
        self._forget_old()
        if len(self.pending()) >= self.max_pending:
            raise PermissionDenied(
                f"{self.max_pending} publishes are already waiting for approval in the operator console "
                "(approvals.max_pending); try again once a person has decided some of them"
            )
        now = self._clock()
        approval = Approval(
            id=secrets.token_urlsafe(12),
            owner=owner,
            caller=caller,
            action=action,
            topic=topic,
            qos=qos,
            retain=retain,
            payload=payload,
            created=now,
            expires=now + self.ttl,
            send=send,
        )
        self._approvals[approval.id] = approval
        asyncio.get_running_loop().call_later(self.ttl, self._expire, approval)
        self._changed(approval)
        return approval

    def pending(self) -> list[Approval]:
        return [a for a in self._approvals.values() if a.status == "pending"]

    def all(self) -> list[Approval]:
        """Every approval remembered, oldest first."""
        self._forget_old()
        return list(self._approvals.values())

    def find(self, approval_id: str) -> Approval | None:
        self._forget_old()
        return self._approvals.get(approval_id)

    def owned(self, approval_id: str, owner: str) -> Approval:
        """The approval `approval_id` made by `owner`; InvalidArgument when there is none (whether it
        does not exist or is someone else's is not told)."""
        approval = self.find(approval_id)
        if approval is None or approval.owner != owner:
            raise InvalidArgument(
                f"there is no approval {approval_id!r} of yours: use the approval_id an mqtt_publish "
                "result gave you (decided approvals are forgotten after approvals.ttl, and every "
                "approval when the server restarts)"
            )
        return approval

    async def decide(self, approval_id: str, decision: Decision, who: str) -> Approval:
        """Approve (and publish) or reject a pending approval; InvalidArgument when it is not pending."""
        approval = self.find(approval_id)
        if approval is None or approval.status != "pending":
            state = "unknown" if approval is None else approval.status
            raise InvalidArgument(f"approval {approval_id!r} is not pending (it is {state})")
        # The transition happens here, before any await: a second approve finds it no longer pending.
        approval.decided_by, approval.decided_at = who, self._clock()
        if decision == "reject":
            self._settle(approval, "rejected")
            return approval
        approval.status = "approved"
        self._changed(approval)
        # A task of its own, shielded: a decider that goes away (a closed page, a cancelled request)
        # must not leave the approval half sent and never settled.
        await asyncio.shield(asyncio.ensure_future(self._send(approval)))
        return approval

    async def _send(self, approval: Approval) -> None:
        try:
            approval.result = await approval.send()
        except McpMqttError as exc:
            approval.error = exc
            self._settle(approval, "failed")
        except BaseException:
            log.exception("the approved %s failed", approval.action)
            self._settle(approval, "failed")
            raise
        else:
            self._settle(approval, "published")

    def _expire(self, approval: Approval) -> None:
        if approval.status == "pending":
            approval.decided_at = self._clock()
            self._settle(approval, "expired")

    def _settle(self, approval: Approval, status: Status) -> None:
        approval.status = status
        approval.settled.set()
        self._audit(approval)
        self._changed(approval)

    def _audit(self, approval: Approval) -> None:
        if self.audit is None:
            return
        published = approval.status == "published"
        self.audit.record(
            "approval",
            topic=approval.topic,
            decision="allowed" if approval.status in ("published", "failed") else "denied",
            outcome=approval.status if approval.error is None else approval.error.prefix,
            reason=None if approval.error is None else approval.error.prefix,
            sent=approval.payload if published else None,
            approval_id=approval.id,
            requested_by=approval.caller,
            decided_by=approval.decided_by,
            decided_at=iso_utc(approval.decided_at) if approval.decided_at is not None else None,
        )

    def _changed(self, approval: Approval) -> None:
        for listener in list(self._listeners):
            try:
                listener(approval)
            except Exception:
                log.exception("an approval listener failed")

    def _forget_old(self) -> None:
        """Drop settled approvals decided more than ttl seconds ago."""
        cutoff = self._clock() - self.ttl
        for key in [
            key
            for key, a in self._approvals.items()
            if a.settled.is_set() and (a.decided_at or a.expires) < cutoff
        ]:
            del self._approvals[key]
