"""What every tool and resource of one server shares (the config, the allowlist, the broker), and whose
allowlist applies to the request being served."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from pydantic import ConfigDict, Field

from mcpmqtt.config import Config, Limits
from mcpmqtt.discovery import DeviceRegistry
from mcpmqtt.mqtt import Broker
from mcpmqtt.observation import ShapeObserver
from mcpmqtt.rules.policy import Allowlist
from mcpmqtt.server.approvals import ApprovalQueue
from mcpmqtt.sparkplug import SparkplugRegistry


class Access(AccessToken):
    """An access token as the SDK knows it, plus the allowlist of its holder (None: the whole one).

    Made by the HTTP transport's verifiers (transports/auth.py) and read here, so that the tools
    depend on this plain record rather than on the authentication code and its JWT libraries.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    allowlist: Allowlist | None = Field(default=None, exclude=True)
    may_approve: bool = Field(default=False, exclude=True)
    """Whether the holder may approve or reject queued publishes in the operator console."""


@dataclass(frozen=True)
class Runtime:
    config: Config
    allowlist: Allowlist
    broker: Broker
    approvals: ApprovalQueue | None = None
    """Publishes waiting for a person in the operator console (server/approvals.py)."""
    devices: DeviceRegistry | None = None
    """The discovered devices; None when discovery is off."""
    sparkplug: SparkplugRegistry | None = None
    """Sparkplug B births and deaths seen, and the decoder of Sparkplug payloads (None when disabled)."""
    shapes: ShapeObserver | None = None
    """Payload shapes inferred per topic (None when disabled)."""
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    """Run once when the server stops, after the broker: e.g. closing the shared state's Redis client."""

    @property
    def limits(self) -> Limits:
        return self.config.limits

    def policy(self) -> Allowlist:
        """The allowlist that applies to the request being served.

        Every tool and resource asks here rather than holding the config's allowlist, so that a
        request authenticated with a narrower grant gets a narrower allowlist in one place. Over HTTP
        the SDK's auth middleware puts the caller's token in a context variable that follows the
        request into the tool; a token narrowed to part of the allowlist carries that part (see
        transports/auth.py). Without a token (stdio, or HTTP without authentication) the whole
        allowlist applies.
        """
        token = get_access_token()
        if isinstance(token, Access) and token.allowlist is not None:
            return token.allowlist
        return self.allowlist
