"""Node.js programs the tests run against the server: the official conformance suite and the TypeScript
SDK's client, installed once into the git-ignored `.node/` folder and reused by later runs.

The conformance suite needs Node 22 or later (it uses `fs.globSync`) while many machines have Node 20,
so Node itself comes from the npm registry's `node` package, into the same folder. Only `npm` is needed
on the machine. The MCP Inspector runs through `npx` as in tests/test_stdio_wire.py: it works on Node 20.
"""

from __future__ import annotations

import functools
import os
import pathlib
import shutil
import subprocess
from dataclasses import dataclass

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FOLDER = ROOT / ".node"
PACKAGES = (
    "node@22",
    "@modelcontextprotocol/conformance@0.2.0-alpha.12",
    "@modelcontextprotocol/client@2.4.0",
)
INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
_MARKER = FOLDER / "installed.txt"
_INSTALL_TIMEOUT = 600


@dataclass(frozen=True)
class Node:
    """Where the installed programs are, and the environment that puts this Node first on PATH."""

    folder: pathlib.Path
    env: dict[str, str]

    @property
    def node(self) -> str:
        return str(self.folder / "node_modules" / ".bin" / "node")

    @property
    def conformance(self) -> str:
        return str(self.folder / "node_modules" / ".bin" / "conformance")


@functools.cache
def node() -> Node:
    """The programs above, installed on first use (skips the test when npm is not on the machine)."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm (Node.js) is not installed: the conformance suite and the TypeScript client need it")
    wanted = "\n".join(PACKAGES)
    if not (_MARKER.exists() and _MARKER.read_text() == wanted):
        FOLDER.mkdir(exist_ok=True)
        done = subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(FOLDER),
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                *PACKAGES,
            ],
            capture_output=True,
            text=True,
            timeout=_INSTALL_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"npm install into {FOLDER} failed:\n{done.stderr[-3000:]}", pytrace=False)
        _MARKER.write_text(wanted)
    bin_folder = FOLDER / "node_modules" / ".bin"
    return Node(FOLDER, {**os.environ, "PATH": f"{bin_folder}{os.pathsep}{os.environ.get('PATH', '')}"})


def npx() -> str:
    """`npx` for the Inspector (skips the test when it is missing)."""
    found = shutil.which("npx")
    if found is None:
        pytest.skip("npx (Node.js) is not installed: the MCP Inspector CLI needs it")
    return found
