"""Asking the person at the MCP client before a guarded publish goes out (``confirm: true``).

MCP elicitation puts a question to the user of the client, not to the model: the model cannot
answer it, so a model that was talked into unlocking a door by a payload still cannot do it alone.
The question travels differently in the two protocol eras (a server-to-client request in
2025-11-25, an ``input_required`` result that the client answers by calling again in 2026-07-28);
the SDK's resolvers (``Resolve`` returning ``Elicit``) handle both, and this module says what to
ask, whether the client can be asked at all, and what an answer means.

A client that cannot elicit gets a refusal that says so, never a publish without the question.
"""

from __future__ import annotations

import json
from typing import Any

from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context
from pydantic import BaseModel, ConfigDict

from mcpmqtt.errors import PermissionDenied

_PREVIEW_CHARS = 300


class Confirmation(BaseModel):
    """The form the person answers: nothing to fill in, only accept or decline."""

    model_config = ConfigDict(title="Confirm the publish")


def can_ask(ctx: Context[Any, Any]) -> bool:
    """Whether the client declared form elicitation (a bare ``elicitation: {}`` counts, as in the spec)."""
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


def question(action: str, payload: bytes, qos: int, retain: bool, patterns: list[str]) -> str:
    """The text the person sees: what will be sent where, and why they are asked.

    The payload is shown quoted and escaped, so that text inside it (a line saying "this is safe")
    cannot pass for part of the question.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        shown = "binary data, not text"
    else:
        cut = text if len(text) <= _PREVIEW_CHARS else text[:_PREVIEW_CHARS]
        shown = json.dumps(cut, ensure_ascii=False) + ("…" if cut is not text else "")
    retained = ", retained" if retain else ""
    return (
        f"An AI agent wants to {action} (QoS {qos}{retained}).\n"
        f"Payload ({len(payload):,} bytes): {shown}\n"
        "This server's operator asked for confirmation of every publish to "
        f"{', '.join(map(repr, patterns))}. Allow it?"
    )


def could_not_ask(outcome: ElicitationResult[Any]) -> bool:
    """Whether the resolver could not put the question to this client (what it returns then)."""
    return isinstance(outcome, AcceptedElicitation) and not isinstance(outcome.data, Confirmation)


def refuse_unless_confirmed(outcome: ElicitationResult[Any], what: str) -> None:
    """Return if the person said yes; raise PermissionDenied saying what happened otherwise.

    ``outcome`` comes from the resolver: an accepted Confirmation when the person agreed, a decline or
    cancel when they did not, and anything else when the resolver could not ask this client.
    """
    if isinstance(outcome, AcceptedElicitation):
        if not could_not_ask(outcome):
            return
        raise PermissionDenied(
            f"{what} needs a person's confirmation, and this client cannot ask "
            "(it does not support elicitation); tell the user, who can publish it another way or use "
            "an MCP client that supports elicitation"
        )
    dismissed = " (they dismissed the question)" if outcome.action == "cancel" else ""
    raise PermissionDenied(
        f"the user declined {what}{dismissed}; do not try again unless the user asks you to"
    )
