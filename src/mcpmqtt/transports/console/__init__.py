"""The operator console at /console: the topic tree with live values, the feed of tool calls and the
approval queue, in one page served from the package (no CDN) and updated by server-sent events."""

from mcpmqtt.transports.console.app import CONSOLE_PATH, Console, DevicesProvider, HistoryProvider

__all__ = ["CONSOLE_PATH", "Console", "DevicesProvider", "HistoryProvider"]
