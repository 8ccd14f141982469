"""The JSON Schema of the config file (issue 5): committed, equal to what the models generate, and in
agreement with the loader on the configs this repository ships and documents.
"""

import copy
import json
import pathlib
import re
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel, ValidationError

from mcpmqtt.config import Config
from mcpmqtt.config import schema as config_schema
from mcpmqtt.demo.config import demo_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMMITTED = ROOT / config_schema.SCHEMA_PATH
MINIMAL: dict[str, Any] = {"topics": [{"pattern": "sensors/+/temperature", "permissions": ["read"]}]}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(COMMITTED.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _problems(validator: jsonschema.Draft202012Validator, data: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]


def _loads(data: Any) -> bool:
    """Whether the loader's models accept `data` (secrets are not resolved: no environment needed)."""
    try:
        Config.model_validate(data)
    except ValidationError:
        return False
    return True


def test_committed_schema_is_what_the_models_generate() -> None:
    assert COMMITTED.exists(), f"{COMMITTED.relative_to(ROOT)} is missing: run `{config_schema.REGENERATE}`"
    assert COMMITTED.read_text(encoding="utf-8") == config_schema.render(), (
        f"{COMMITTED.relative_to(ROOT)} is out of date with the models in src/mcpmqtt/config/models.py: "
        f"run `{config_schema.REGENERATE}` from the repository root and commit the result"
    )


def test_schema_names_its_dialect_and_itself(validator: jsonschema.Draft202012Validator) -> None:
    schema = validator.schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"]


def test_every_model_in_the_schema_forbids_unknown_keys(validator: jsonschema.Draft202012Validator) -> None:
    definitions = {"Config": validator.schema, **validator.schema["$defs"]}
    models = {name: schema for name, schema in definitions.items() if "properties" in schema}
    open_ = [name for name, model in models.items() if model.get("additionalProperties") is not False]
    assert not open_, f"these sections would accept unknown keys that the loader refuses: {open_}"


@pytest.mark.parametrize(
    "path",
    ["examples/config.json", "tests/fixtures/original_config.json"],
)
def test_shipped_configs_validate(validator: jsonschema.Draft202012Validator, path: str) -> None:
    data = json.loads((ROOT / path).read_text(encoding="utf-8"))
    assert _problems(validator, data) == []


def test_demo_config_validates(validator: jsonschema.Draft202012Validator) -> None:
    data = demo_config("127.0.0.1", 1883).model_dump(mode="json")
    assert _problems(validator, data) == []


def _documented_configs() -> list[Any]:
    """Every JSON block with a `topics` key in the README and the docs that show whole configs."""
    blocks = []
    for doc in ("README.md", "docs/configuration.md", "docs/security.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        for block in re.findall(r"```json\n(.*?)```", text, re.DOTALL):
            data = json.loads(block)
            if isinstance(data, dict) and "topics" in data:
                blocks.append(data)
    return blocks


def test_documented_configs_the_loader_accepts_validate(validator: jsonschema.Draft202012Validator) -> None:
    accepted = [data for data in _documented_configs() if _loads(data)]
    assert len(accepted) >= 5  # configuration.md's complete and smallest, README's, security.md's two
    for data in accepted:
        assert _problems(validator, data) == [], json.dumps(data)


# Every section that is an object of its own: mqtt, logging, limits, and whatever is added later.
SECTIONS = [
    name
    for name, field in Config.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
]


@pytest.mark.parametrize("section", [None, "topics", *SECTIONS])
def test_an_unknown_key_fails_like_in_the_loader(
    validator: jsonschema.Draft202012Validator, section: str | None
) -> None:
    data = copy.deepcopy(MINIMAL)
    if section is None:
        data["colour"] = "blue"
    elif section == "topics":
        data["topics"][0]["colour"] = "blue"
    else:
        data[section] = {"colour": "blue"}
    assert not _loads(data)
    assert any("'colour' was unexpected" in problem for problem in _problems(validator, data))


def test_a_schema_key_in_the_config_is_unknown_to_both() -> None:
    # Editors must be pointed at the schema by their settings: "$schema" in the file is refused.
    data = {"$schema": "../schema/config.schema.json", **MINIMAL}
    assert not _loads(data)
    validator = jsonschema.Draft202012Validator(json.loads(COMMITTED.read_text(encoding="utf-8")))
    assert _problems(validator, data)


@pytest.mark.parametrize(
    ("change", "value"),
    [
        (("topics", 0, "description"), None),  # the original mcpMQTT format allows null
        (("logging", "level"), "debug"),
        (("logging", "level"), "Warning"),
        (("logging", "level"), "INFO"),
    ],
)
def test_what_the_loader_accepts_beyond_its_types_validates(
    validator: jsonschema.Draft202012Validator, change: tuple[Any, ...], value: Any
) -> None:
    data: dict[str, Any] = copy.deepcopy(MINIMAL) | {"logging": {}}
    target: Any = data
    for key in change[:-1]:
        target = target[key]
    target[change[-1]] = value
    assert _loads(data)
    assert _problems(validator, data) == []


@pytest.mark.parametrize(
    ("data", "says"),
    [
        pytest.param({}, "'topics' is a required property", id="no-topics"),
        pytest.param({"topics": []}, "should be non-empty", id="empty-topics"),
        pytest.param({"topics": [{"pattern": "a"}]}, "'permissions' is a required property", id="no-perms"),
        pytest.param(
            {"topics": [{"pattern": "a", "permissions": ["execute"]}]}, "is not one of", id="bad-perm"
        ),
        pytest.param({**MINIMAL, "mqtt": {"port": 70000}}, "greater than the maximum", id="port"),
        pytest.param({**MINIMAL, "mqtt": {"protocol": 5}}, "is not one of", id="protocol-number"),
        pytest.param({**MINIMAL, "logging": {"level": "verbose"}}, "not valid under any", id="level"),
        pytest.param({**MINIMAL, "limits": {"max_timeout": 0}}, "or equal to the minimum", id="timeout"),
    ],
)
def test_what_the_loader_refuses_for_its_types_fails(
    validator: jsonschema.Draft202012Validator, data: dict[str, Any], says: str
) -> None:
    assert not _loads(data)
    problems = _problems(validator, data)
    assert any(says in problem for problem in problems), problems


def test_the_module_prints_and_writes_the_schema(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert config_schema.main([]) == 0
    assert capsys.readouterr().out == COMMITTED.read_text(encoding="utf-8")

    monkeypatch.chdir(tmp_path)
    assert config_schema.main(["--write"]) == 2  # no schema/ folder: not the repository root
    assert "run this from the repository root" in capsys.readouterr().err
    (tmp_path / "schema").mkdir()
    assert config_schema.main(["--write"]) == 0
    assert (tmp_path / config_schema.SCHEMA_PATH).read_text(encoding="utf-8") == COMMITTED.read_text(
        encoding="utf-8"
    )
