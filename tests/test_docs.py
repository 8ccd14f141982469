"""The documentation keeps up with the code: every config key is in the configuration reference, and
the MCP Inspector commands it gives work as written."""

import json
import os
import pathlib
import shlex
import subprocess
import sys
import types
import typing
from collections.abc import Iterator

import pytest
from node import node, npx
from pydantic import BaseModel

from mcpmqtt.config import Config

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


def _models(annotation: object) -> Iterator[type[BaseModel]]:
    """The pydantic models an annotation mentions, however nested (lists, optionals, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for argument in typing.get_args(annotation):
        yield from _models(argument)
    if isinstance(annotation, types.UnionType):
        for argument in annotation.__args__:
            yield from _models(argument)


def config_models() -> list[type[BaseModel]]:
    """Config and every model reachable from its fields: a new section is checked without a list to keep."""
    found: dict[type[BaseModel], None] = {}
    pending: list[type[BaseModel]] = [Config]
    while pending:
        model = pending.pop()
        if model in found:
            continue
        found[model] = None
        for field in model.model_fields.values():
            pending.extend(_models(field.annotation))
    return list(found)


def test_every_section_of_the_config_is_found() -> None:
    names = {model.__name__ for model in config_models()}
    assert {"MqttSettings", "MqttTls", "TopicEntry", "HttpSettings", "ApiKey", "OAuthSettings"} <= names


@pytest.mark.parametrize("model", config_models(), ids=lambda model: model.__name__)
def test_configuration_reference_names_every_key(model: type[BaseModel]) -> None:
    reference = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = [name for name in model.model_fields if f"`{name}`" not in reference]
    assert not missing, f"docs/configuration.md does not describe {model.__name__} keys {missing}"


# ---- the MCP Inspector commands the docs give -------------------------------------------------------

INSPECTOR_CLI = "npx -y @modelcontextprotocol/inspector@2.12.0 --cli"


def _inspector_commands() -> list[tuple[str, str]]:
    """Every documented Inspector CLI command line (continuations joined), with the file it is in."""
    found = []
    for path in [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = path.read_text(encoding="utf-8").replace("\\\n", " ")
        for line in text.splitlines():
            command = " ".join(line.split())
            if command.startswith(INSPECTOR_CLI):
                found.append((path.name, command))
    return found


def _starts_a_server(command: str) -> bool:
    """Whether the Inspector starts mcpmqtt itself (stdio), rather than reaching a URL or a host file."""
    rest = command.removeprefix(INSPECTOR_CLI).split()
    return not rest[0].startswith("http") and "--server" not in rest


def test_every_documented_stdio_inspector_command_puts_the_server_command_last() -> None:
    """The Inspector takes --config and --transport as its own, and reads every word after --tool-arg
    as another argument: only the server command after `--` reaches mcpmqtt whole."""
    stdio = [(name, command) for name, command in _inspector_commands() if _starts_a_server(command)]
    assert len(stdio) >= 4
    wrong = [(name, command) for name, command in stdio if " -- mcpmqtt" not in command]
    assert not wrong, f"server command not last, after --: {wrong}"


@pytest.mark.inspector
def test_the_documented_inspector_commands_for_the_demo_work(tmp_path: pathlib.Path) -> None:
    demo = [
        command
        for _, command in _inspector_commands()
        if command.endswith("-- mcpmqtt demo --transport stdio")
    ]
    assert demo, "the docs show no Inspector command for the demo over stdio"
    env = node().env  # the Inspector asks for Node >= 22.19
    env["PATH"] = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # where `mcpmqtt` is
    for command in demo:
        words = shlex.split(command)
        done = subprocess.run(
            [npx(), *words[1:]], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        result = json.loads(done.stdout)
        assert "tools" in result or ("content" in result and not result.get("isError")), command
