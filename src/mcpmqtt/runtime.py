"""What every tool and resource of one server shares: the config, the allowlist, the broker."""

from dataclasses import dataclass

from mcp.server.auth.middleware.auth_context import get_access_token

from mcpmqtt.auth import Access
from mcpmqtt.broker import Broker
from mcpmqtt.config import Config, Limits
from mcpmqtt.policy import Allowlist


@dataclass(frozen=True)
class Runtime:
    config: Config
    allowlist: Allowlist
    broker: Broker

    @property
    def limits(self) -> Limits:
        return self.config.limits

    def policy(self) -> Allowlist:
        """The allowlist that applies to the request being served.

        Every tool and resource asks here rather than holding the config's allowlist, so that a
        request authenticated with a narrower grant gets a narrower allowlist in one place. Over HTTP
        the SDK's auth middleware puts the caller's token in a context variable that follows the
        request into the tool; a token narrowed to part of the allowlist carries that part (see
        auth.py). Without a token (stdio, or HTTP without authentication) the whole allowlist applies.
        """
        token = get_access_token()
        if isinstance(token, Access) and token.allowlist is not None:
            return token.allowlist
        return self.allowlist
