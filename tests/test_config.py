"""The config file (CONTRACT §2): the original format loads unchanged, and every mistake is an error
that names the file and the field.
"""

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from mcpmqtt.config import (
    CONFIG_ENV_VAR,
    ConfigError,
    MqttSettings,
    default_config_path,
    load_config,
)

ORIGINAL = Path(__file__).parent / "fixtures" / "original_config.json"

ORIGINAL_RULES = [
    ("sensors/+/temperature", {"read"}),
    ("sensors/+/humidity", {"read"}),
    ("actuators/#", {"write"}),
    ("status/system", {"read"}),
    ("commands/+/request", {"write"}),
    ("commands/+/response", {"read"}),
]

MINIMAL: dict[str, Any] = {"topics": [{"pattern": "sensors/+/temperature", "permissions": ["read"]}]}


def _write(tmp_path: Path, data: Any, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _with(**sections: Any) -> dict[str, Any]:
    """The minimal valid config with some sections replaced or added."""
    data = copy.deepcopy(MINIMAL)
    data.update(sections)
    return data


def _load_error(tmp_path: Path, data: Any) -> tuple[str, Path]:
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value), path


# --- The original format -------------------------------------------------------------------------------


def test_original_config_loads_unchanged_with_its_six_patterns_and_permissions() -> None:
    config = load_config(ORIGINAL)
    assert [(t.pattern, set(t.permissions)) for t in config.topics] == ORIGINAL_RULES
    assert [(r.pattern, set(r.permissions)) for r in config.allowlist().rules] == ORIGINAL_RULES
    assert config.topics[3].description == "System status information - exact topic match"
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.keepalive) == ("localhost", 1883, 60)
    assert config.mqtt.username is None
    assert config.mqtt.resolved_password() is None
    assert config.logging.level == "INFO"
    assert config.logging.logfile is None


def test_minimal_config_needs_only_topics(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, MINIMAL))
    assert [t.pattern for t in config.topics] == ["sensors/+/temperature"]
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.protocol) == ("localhost", 1883, "5")


# --- Unknown keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        pytest.param(_with(mqt={}), "mqt", id="top"),
        pytest.param(_with(mqtt={"hots": "broker.local"}), "mqtt.hots", id="mqtt"),
        pytest.param(
            _with(topics=[{"pattern": "a", "permissions": ["read"], "permission": ["write"]}]),
            "topics[0].permission",
            id="topic-entry",
        ),
        pytest.param(
            _with(
                topics=[
                    {"pattern": "a", "permissions": ["read"]},
                    {"pattern": "b", "permissions": ["read"], "qos": 1},
                ]
            ),
            "topics[1].qos",
            id="second-topic-entry",
        ),
        pytest.param(_with(logging={"levle": "DEBUG"}), "logging.levle", id="logging"),
        pytest.param(_with(limits={"max_payload": 10}), "limits.max_payload", id="limits"),
    ],
)
def test_unknown_key_is_an_error_naming_the_file_and_the_field(
    tmp_path: Path, data: dict[str, Any], field: str
) -> None:
    message, path = _load_error(tmp_path, data)
    assert str(path) in message
    assert f"{field}: unknown key" in message


# --- Topics ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["a/#/b", "+a", "a#", "a/b+", "#/a"])
def test_invalid_pattern_stops_loading_and_names_the_pattern(tmp_path: Path, pattern: str) -> None:
    message, path = _load_error(tmp_path, _with(topics=[{"pattern": pattern, "permissions": ["read"]}]))
    assert str(path) in message
    assert "topics[0].pattern" in message
    assert repr(pattern) in message


def test_empty_topics_list_is_an_error(tmp_path: Path) -> None:
    message, path = _load_error(tmp_path, _with(topics=[]))
    assert str(path) in message
    assert "topics: the allowlist needs at least one entry" in message
    assert '{"pattern": "sensors/+/temperature", "permissions": ["read"]' in message  # an entry to copy


def test_missing_topics_key_is_an_error(tmp_path: Path) -> None:
    message, path = _load_error(tmp_path, {"mqtt": {"host": "localhost"}})
    assert str(path) in message
    assert "topics: required key is missing" in message


@pytest.mark.parametrize("permission", ["admin", "Read", "subscribe", ""])
def test_permission_other_than_read_or_write_is_an_error_naming_the_valid_values(
    tmp_path: Path, permission: str
) -> None:
    message, _ = _load_error(tmp_path, _with(topics=[{"pattern": "a", "permissions": ["read", permission]}]))
    assert "topics[0].permissions[1]" in message
    assert "'read'" in message
    assert "'write'" in message
    assert repr(permission) in message


def test_empty_permissions_list_is_an_error(tmp_path: Path) -> None:
    message, _ = _load_error(tmp_path, _with(topics=[{"pattern": "a", "permissions": []}]))
    assert "topics[0].permissions" in message


@pytest.mark.parametrize(
    ("permissions", "meant"),
    [(["read", "read"], ["read"]), (["write", "read", "write"], ["read", "write"])],
)
def test_repeated_permission_loads_as_given_once_like_the_original(
    tmp_path: Path, permissions: list[str], meant: list[str]
) -> None:
    config = load_config(_write(tmp_path, _with(topics=[{"pattern": "a", "permissions": permissions}])))
    assert config.topics[0].permissions == meant


def test_null_description_loads_as_empty_like_the_original(tmp_path: Path) -> None:
    config = load_config(
        _write(tmp_path, _with(topics=[{"pattern": "a", "permissions": ["read"], "description": None}]))
    )
    assert config.topics[0].description == ""


@pytest.mark.parametrize("keepalive", [0, 1, 4, 65535])
def test_any_mqtt_keepalive_loads(tmp_path: Path, keepalive: int) -> None:
    config = load_config(_write(tmp_path, _with(mqtt={"keepalive": keepalive})))
    assert config.mqtt.keepalive == keepalive


def test_relative_logfile_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, _with(logging={"logfile": "logs/mcpmqtt.log"})))
    assert config.logging.logfile == tmp_path / "logs" / "mcpmqtt.log"


# --- mqtt ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("port", [0, -1, 65536, 100_000])
def test_port_out_of_range_is_an_error(tmp_path: Path, port: int) -> None:
    message, path = _load_error(tmp_path, _with(mqtt={"port": port}))
    assert str(path) in message
    assert "mqtt.port" in message


@pytest.mark.parametrize("port", [1, 8883, 65535])
def test_port_in_range_loads(tmp_path: Path, port: int) -> None:
    assert load_config(_write(tmp_path, _with(mqtt={"port": port}))).mqtt.port == port


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_protocol_accepts_5_and_3_1_1(tmp_path: Path, protocol: str) -> None:
    assert load_config(_write(tmp_path, _with(mqtt={"protocol": protocol}))).mqtt.protocol == protocol


def test_protocol_4_is_an_error_naming_the_valid_values(tmp_path: Path) -> None:
    message, _ = _load_error(tmp_path, _with(mqtt={"protocol": "4"}))
    assert "mqtt.protocol" in message
    assert "'5'" in message
    assert "'3.1.1'" in message
    assert "(got '4')" in message


def test_default_client_id_is_unique_per_call_and_starts_with_mcpmqtt() -> None:
    settings = MqttSettings()
    ids = {settings.resolved_client_id() for _ in range(20)}
    assert len(ids) == 20
    assert all(client_id.startswith("mcpmqtt-") for client_id in ids)


def test_configured_client_id_is_used_as_is(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, _with(mqtt={"client_id": "lab-agent-1"})))
    assert config.mqtt.resolved_client_id() == "lab-agent-1"
    assert config.mqtt.resolved_client_id() == "lab-agent-1"


# --- Secrets ---------------------------------------------------------------------------------------------


def test_password_env_reads_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPMQTT_TEST_PASSWORD", "from-the-environment")
    config = load_config(_write(tmp_path, _with(mqtt={"password_env": "MCPMQTT_TEST_PASSWORD"})))
    assert config.mqtt.resolved_password() == "from-the-environment"


def test_missing_password_env_variable_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MCPMQTT_TEST_PASSWORD", raising=False)
    message, path = _load_error(tmp_path, _with(mqtt={"password_env": "MCPMQTT_TEST_PASSWORD"}))
    assert str(path) in message
    assert "mqtt.password_env" in message
    assert "MCPMQTT_TEST_PASSWORD is not set" in message


@pytest.mark.parametrize(
    ("content", "password"),
    [
        ("hunter2\n", "hunter2"),
        ("hunter2\r\n", "hunter2"),
        ("hunter2", "hunter2"),
        ("  spaced pass \n", "  spaced pass "),  # only the line ending goes: spaces may be part of it
    ],
)
def test_password_file_is_read_and_the_trailing_newline_stripped(
    tmp_path: Path, content: str, password: str
) -> None:
    secret = tmp_path / "password"
    secret.write_bytes(content.encode("utf-8"))
    config = load_config(_write(tmp_path, _with(mqtt={"password_file": str(secret)})))
    assert config.mqtt.resolved_password() == password


def test_unreadable_password_file_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-password"
    message, path = _load_error(tmp_path, _with(mqtt={"password_file": str(missing)}))
    assert str(path) in message
    assert "mqtt.password_file" in message
    assert str(missing) in message


@pytest.mark.parametrize(
    ("sources", "named"),
    [
        ({"password": "x", "password_env": "X"}, "password, password_env"),
        ({"password": "x", "password_file": "/x"}, "password, password_file"),
        ({"password_env": "X", "password_file": "/x"}, "password_env, password_file"),
    ],
)
def test_two_password_sources_at_once_is_an_error(
    tmp_path: Path, sources: dict[str, str], named: str
) -> None:
    message, path = _load_error(tmp_path, _with(mqtt=sources))
    assert str(path) in message
    assert "give only one of password, password_env, password_file" in message
    assert f"(got {named})" in message


# --- logging ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["info", "Info", "INFO", "debug", "warning"])
def test_logging_level_is_case_insensitive(tmp_path: Path, level: str) -> None:
    assert load_config(_write(tmp_path, _with(logging={"level": level}))).logging.level == level.upper()


def test_unknown_logging_level_is_an_error(tmp_path: Path) -> None:
    message, _ = _load_error(tmp_path, _with(logging={"level": "verbose"}))
    assert "logging.level" in message
    assert "'INFO'" in message


# --- The file itself -------------------------------------------------------------------------------------


def test_invalid_json_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{\n  "topics": [\n    {"pattern": "a",, "permissions": ["read"]}\n  ]\n}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert "not valid JSON at line 3, column 21" in message


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            '{\n  "topics": [\n    {"pattern": "a", "permissions": ["read"]},\n  ]\n}\n',
            "a trailing comma before ] is not allowed in JSON: remove the comma at line 3, column 46",
        ),
        (
            '{"topics": [{"pattern": "a", "permissions": ["read"],}]}',
            "a trailing comma before } is not allowed in JSON: remove the comma at line 1, column 53",
        ),
    ],
)
def test_a_trailing_comma_is_named_as_the_likely_cause(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=says):
        load_config(path)


def test_a_json_error_without_a_trailing_comma_blames_no_comma(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"topics": [}')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "comma" not in str(caught.value)


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_an_empty_file_is_called_empty(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"invalid config {path}: the file is empty" in str(caught.value)
    assert "Expecting value" not in str(caught.value)


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({**MINIMAL, "topcs": []}, "topcs: unknown key; did you mean 'topics'?"),
        (_with(mqtt={"hots": "broker"}), "mqtt.hots: unknown key; did you mean 'host'?"),
        (
            {"topics": [{"pattern": "a", "permissions": ["read"], "descripton": "x"}]},
            "topics[0].descripton: unknown key; did you mean 'description'?",
        ),
        (_with(mqtt={"tls": {"ca_fil": "ca.pem"}}), "mqtt.tls.ca_fil: unknown key; did you mean 'ca_file'?"),
        (
            _with(mqtt={"zzzzzz": 1}),
            "mqtt.zzzzzz: unknown key (not part of the config format; check the spelling)",
        ),
    ],
)
def test_a_misspelt_key_gets_a_did_you_mean(tmp_path: Path, config: dict[str, Any], says: str) -> None:
    message, _ = _load_error(tmp_path, config)
    assert says in message


def test_top_level_json_array_is_an_error(tmp_path: Path) -> None:
    message, path = _load_error(tmp_path, [MINIMAL])
    assert str(path) in message
    assert "top level must be a JSON object" in message


def test_missing_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "config.json"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"config file not found: {path}" in str(caught.value)


# --- Where the config is found ---------------------------------------------------------------------------


def test_mcpmqtt_config_variable_sets_the_default_path_and_tilde_is_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(CONFIG_ENV_VAR, "~/configs/lab.json")
    assert default_config_path() == tmp_path / "configs" / "lab.json"


def test_default_path_without_the_variable_is_in_the_home_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    assert default_config_path() == tmp_path / ".config" / "mcpmqtt" / "config.json"


def test_load_config_without_a_path_reads_the_file_named_by_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_ENV_VAR, str(ORIGINAL))
    assert len(load_config().topics) == len(ORIGINAL_RULES)


def test_password_env_holding_a_password_is_refused_without_echoing_it(tmp_path: Path) -> None:
    message, _ = _load_error(tmp_path, _with(mqtt={"password_env": "hunter2 is my pass!"}))
    assert "mqtt.password_env" in message and "NAME of an environment variable" in message
    assert "hunter2" not in message


def test_relative_password_file_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "secret.txt").write_text("from-beside-the-config\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(_write(tmp_path, _with(mqtt={"password_file": "secret.txt"})))
    assert config.mqtt.resolved_password() == "from-beside-the-config"
