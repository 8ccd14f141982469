"""Reading a config file: where it is, JSON decoding, validation, relative paths, and errors that name
the file and the field."""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from mcpmqtt.config.models import Config
from mcpmqtt.errors import ConfigError
from mcpmqtt.rules.grants import grant_problems

DEFAULT_CONFIG_PATH = Path("~/.config/mcpmqtt/config.json")
CONFIG_ENV_VAR = "MCPMQTT_CONFIG"


def default_config_path() -> Path:
    """$MCPMQTT_CONFIG if set, else ~/.config/mcpmqtt/config.json."""
    return Path(os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH).expanduser()


_EXAMPLE_ENTRY = (
    '{"pattern": "sensors/+/temperature", "permissions": ["read"], "description": "Room temperatures"}'
)


def _describe(error: Any) -> str:
    location = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
    location = location or "(top level)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key (not part of the config format; check the spelling)"
        *parent, key = error["loc"]
        if isinstance(key, str) and (close := difflib.get_close_matches(key, _keys_at(parent), n=1)):
            message = f"unknown key; did you mean {close[0]!r}?"
    elif error["type"] == "too_short" and tuple(error["loc"]) == ("topics",):
        message = (
            "the allowlist needs at least one entry (nothing is allowed by default, and an empty "
            f"allowlist would allow nothing at all), e.g. {_EXAMPLE_ENTRY}"
        )
    elif error["type"] == "missing":
        message = "required key is missing"
    elif error["type"] in ("literal_error", "enum") and location != "mqtt.password_env":
        message = f"{message} (got {error['input']!r})"
    return f"{location}: {message}"


def _keys_at(location: list[Any]) -> list[str]:
    """The keys the config format allows at `location` (a pydantic error location), for "did you mean".

    List indexes and the keys of mappings (such as the names of OAuth scopes) are skipped: they are
    the user's, not the format's.
    """
    model: type[BaseModel] = Config
    for part in location:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            continue
        inner = _model_in(field.annotation)
        if inner is None:
            return []
        model = inner
    return [field.alias or name for name, field in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, also inside `X | None`, `list[X]` or `dict[str, X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        if (found := _model_in(argument)) is not None:
            return found
    return None


def _relative_to(config: Config, base: Path) -> Config:
    def resolve(path: Path | None) -> Path | None:
        return path if path is None or path.expanduser().is_absolute() else base / path

    mqtt = config.mqtt.model_copy(update={"password_file": resolve(config.mqtt.password_file)})
    if (tls := mqtt.tls) is not None:
        files = {"ca_file": tls.ca_file, "cert_file": tls.cert_file, "key_file": tls.key_file}
        mqtt = mqtt.model_copy(
            update={"tls": tls.model_copy(update={k: resolve(v) for k, v in files.items()})}
        )
    http = config.http
    if http.oauth is not None:
        http = http.model_copy(
            update={"oauth": http.oauth.model_copy(update={"jwks_file": resolve(http.oauth.jwks_file)})}
        )
    logging = config.logging.model_copy(update={"logfile": resolve(config.logging.logfile)})
    audit = config.audit and config.audit.model_copy(update={"path": resolve(config.audit.path)})
    return config.model_copy(update={"mqtt": mqtt, "logging": logging, "audit": audit, "http": http})


def parse_config(data: Any, source: str, base: Path | None = None) -> Config:
    """Validate decoded JSON; `source` names the file in every error.

    Relative paths in the file (password_file, logging.logfile, audit.path) are taken relative to `base`, the
    config file's folder, so that a config means the same whatever directory a host starts us from.
    """
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        lines = "\n".join(f"  - {_describe(e)}" for e in exc.errors())
        raise ConfigError(f"invalid config {source}:\n{lines}") from None
    if base is not None:
        config = _relative_to(config, base)
    try:
        config.mqtt.resolved_password()
        if config.mqtt.tls is not None:
            config.mqtt.tls.ssl_context()
    except ConfigError as exc:
        raise ConfigError(f"invalid config {source}:\n  - {exc}") from None
    allowlist = config.allowlist()
    # A grant is checked against the allowlist, which the models alone cannot see.
    problems = [
        f"{where}[{index}]: {text}"
        for where, grant in config.http.grants()
        for index, text in grant_problems(allowlist, grant)
    ]
    if problems:
        lines = "\n".join(f"  - {problem}" for problem in problems)
        raise ConfigError(f"invalid config {source}:\n{lines}")
    return config


def _likely_cause(error: json.JSONDecodeError) -> str:
    """What is probably wrong, where json's message alone ("Expecting value") would not say."""
    text, position = error.doc, error.pos
    before = text[:position].rstrip()
    if position < len(text) and text[position] in "}]" and before.endswith(","):
        comma = len(before) - 1
        line = text.count("\n", 0, comma) + 1
        column = comma - (text.rfind("\n", 0, comma) + 1) + 1
        return (
            f"; a trailing comma before {text[position]} is not allowed in JSON: remove the comma at "
            f"line {line}, column {column}"
        )
    return ""


def load_config(path: Path | None = None) -> Config:
    """Read and validate a config file; any problem is a ConfigError naming the file and the field."""
    path = (path or default_config_path()).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file not found: {path} (pass --config PATH, set {CONFIG_ENV_VAR}, "
            f"or create {DEFAULT_CONFIG_PATH}; see docs/configuration.md)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if not text.strip():
        raise ConfigError(
            f"invalid config {path}: the file is empty; a config is a JSON object with at least a "
            f'"topics" list, e.g. {{"topics": [{_EXAMPLE_ENTRY}]}} (see docs/configuration.md)'
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"invalid config {path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            + _likely_cause(exc)
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {path}: the top level must be a JSON object")
    return parse_config(data, str(path), path.parent)
