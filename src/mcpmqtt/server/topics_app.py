"""The topic view as an MCP App: hosts that render apps show mqtt_list_topics' result as a table.

The `ui://` resource is linked from the tool's `_meta.ui.resourceUri`; the host loads it into a
sandboxed frame and hands it the tool's result. Hosts without apps get the same complete text and
structured results as before: the app only draws what the result already holds.
"""

from importlib.resources import files

from mcp.server.apps import Apps

TOPICS_APP_URI = "ui://mcpmqtt/topics.html"
TOPICS_APP_META = {"ui": {"resourceUri": TOPICS_APP_URI}}
"""The `_meta` of mqtt_list_topics, linking it to the app."""


def topics_app() -> Apps:
    """The MCP Apps extension with the topic view's resource."""
    apps = Apps()
    apps.add_html_resource(
        TOPICS_APP_URI,
        files(__package__).joinpath("topics_app.html").read_text(encoding="utf-8"),
        name="mqtt-topics",
        title="MQTT topics",
        description="The topics mqtt_list_topics found, with their last values, as a table.",
    )
    return apps
