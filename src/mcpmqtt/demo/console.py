"""Text for people: colour on a terminal only, never in a pipe, a log file or under NO_COLOR."""

import os
from typing import TextIO


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
