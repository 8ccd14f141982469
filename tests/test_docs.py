"""The documentation keeps up with the code: every config key is in the configuration reference."""

import pathlib

import pytest
from pydantic import BaseModel

from mcpmqtt.config import (
    AuditSettings,
    Config,
    Limits,
    LoggingSettings,
    MqttSettings,
    PromptArgumentEntry,
    PromptEntry,
    TopicEntry,
)

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize(
    "model",
    [
        Config,
        MqttSettings,
        TopicEntry,
        LoggingSettings,
        Limits,
        AuditSettings,
        PromptEntry,
        PromptArgumentEntry,
    ],
)
def test_configuration_reference_names_every_key(model: type[BaseModel]) -> None:
    reference = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = [name for name in model.model_fields if f"`{name}`" not in reference]
    assert not missing, f"docs/configuration.md does not describe {model.__name__} keys {missing}"
