"""The documentation keeps up with the code: every config key is in the configuration reference."""

import pathlib
import types
import typing
from collections.abc import Iterator

import pytest
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
