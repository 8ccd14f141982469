"""How to reach the broker: everything the adapter needs, as plain values (the config turns into these)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    keepalive: int = 60
    protocol: Literal["5", "3.1.1"] = "5"
    reply_topic_prefix: str = "mcpmqtt/replies"
    ack_timeout: float = 10.0
    connect_grace: float = 3.0
    tls: ssl.SSLContext | None = None
    transport: Literal["tcp", "websockets"] = "tcp"
    websocket_path: str = "/mqtt"
    max_qos: int = 2
