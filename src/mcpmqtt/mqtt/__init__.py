"""The MQTT adapter: the only package that imports paho or aiomqtt, and it knows nothing of MCP.

One shared connection for the process (connect, reconnect, protocol fallback, acknowledgements),
subscription routing with reference counts and subscription identifiers, per-call inboxes and
replies, MQTT 5 properties as plain data, and the fast reader. Failures are raised as the errors of
`mcpmqtt.errors`.
"""

from mcpmqtt.mqtt.broker import Broker
from mcpmqtt.mqtt.inbox import Inbox, Sink
from mcpmqtt.mqtt.properties import PublishProperties
from mcpmqtt.mqtt.received import Received
from mcpmqtt.mqtt.replies import Reply
from mcpmqtt.mqtt.settings import BrokerSettings

__all__ = ["Broker", "BrokerSettings", "Inbox", "PublishProperties", "Received", "Reply", "Sink"]
