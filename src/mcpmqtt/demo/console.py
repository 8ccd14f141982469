"""Text for people: colour on a terminal only, never in a pipe, a log file or under NO_COLOR."""

import os
from typing import Any, TextIO

from mcp_types import CallToolResult, TextContent

from mcpmqtt.errors import McpMqttError


class Style:
    """ANSI styling for one output stream, switched off unless that stream is a terminal."""

    def __init__(self, stream: TextIO) -> None:
        # https://no-color.org: NO_COLOR set to anything but "" turns colour off.
        self.enabled = stream.isatty() and not os.environ.get("NO_COLOR")

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def green(self, text: str) -> str:
        return self._wrap("32", text)

    def red(self, text: str) -> str:
        return self._wrap("31", text)

    def cyan(self, text: str) -> str:
        return self._wrap("36", text)


def tool_call_line(
    name: str, arguments: dict[str, Any], result: CallToolResult, error: McpMqttError | None, style: Style
) -> str:
    """One line for one tool call, so that the person running the demo sees what the agent did:
    `→ mqtt_publish lights/kitchen/set: refused: permission denied: …`."""
    topic = next((arguments[key] for key in ("topic", "request_topic", "filter") if key in arguments), None)
    what = f"→ {name}" + (f" {topic}" if isinstance(topic, str) else "")
    if not result.is_error:
        timed_out = (result.structured_content or {}).get("timed_out") is True
        return f"{what}: {style.green('ok')}" + (" (timed out, nothing came)" if timed_out else "")
    first = result.content[0] if result.content else None
    text = first.text if isinstance(first, TextContent) else "(no text)"
    how = "refused" if error is not None and error.refusal else "failed"
    return f"{what}: {style.red(how)}: {text}"
