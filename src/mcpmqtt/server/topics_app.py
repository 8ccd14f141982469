"""The topic and history views as MCP Apps: hosts that render apps show mqtt_list_topics' result as a
table, and mqtt_history's as a table with a chart of its values.

Each `ui://` resource is linked from its tool's `_meta.ui.resourceUri`; the host loads it into a
sandboxed frame and hands it the tool's result. Hosts without apps get the same complete text and
structured results as before: the app only draws what the result already holds.
"""

from importlib.resources import files

from mcp.server.apps import Apps

TOPICS_APP_URI = "ui://mcpmqtt/topics.html"
TOPICS_APP_META = {"ui": {"resourceUri": TOPICS_APP_URI}}
"""The `_meta` of mqtt_list_topics, linking it to the app."""
HISTORY_APP_URI = "ui://mcpmqtt/history.html"
HISTORY_APP_META = {"ui": {"resourceUri": HISTORY_APP_URI}}
"""The `_meta` of mqtt_history, linking it to the app."""


def topics_app(history: bool = False) -> Apps:
    """The MCP Apps extension with the topic view's resource, and the history view's when the server
    keeps a history."""
    apps = Apps()
    apps.add_html_resource(
        TOPICS_APP_URI,
        files(__package__).joinpath("topics_app.html").read_text(encoding="utf-8"),
        name="mqtt-topics",
        title="MQTT topics",
        description="The topics mqtt_list_topics found, with their last values, as a table.",
    )
    if history:
        apps.add_html_resource(
            HISTORY_APP_URI,
            files(__package__).joinpath("history_app.html").read_text(encoding="utf-8"),
            name="mqtt-history",
            title="MQTT history",
            description="What mqtt_history found: messages, or buckets with a chart of their values.",
        )
    return apps
