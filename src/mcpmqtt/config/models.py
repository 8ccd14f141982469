"""The config file's models: every section, its defaults, and checks with errors a person can act on.

The format is a superset of the original mcpMQTT config, which must load unchanged. Every model
forbids unknown keys: a misspelt key that was silently ignored would leave a user believing a
limit or a secret was in force when it was not.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from mcpmqtt.config.base import Model
from mcpmqtt.config.http import HttpSettings
from mcpmqtt.config.templates import BUILTIN_PROMPTS, placeholders
from mcpmqtt.discovery.ingest import DiscoveryOptions
from mcpmqtt.errors import ConfigError, InvalidArgument
from mcpmqtt.rules.guardrails import Guardrail, Guardrails, parse_rate, schema_problem
from mcpmqtt.rules.policy import Allowlist, Rule
from mcpmqtt.rules.spans import parse_span
from mcpmqtt.rules.topics import filter_problem, name_problem, overlaps, split_shared

REPLY_TOPICS = (
    "the server's private reply topics (mqtt_query's replies to every session); no agent reads or "
    "writes them, whatever other patterns allow"
)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _span(value: str) -> str:
    """A config value that must be a span of time ("24h"); a config error, without a tool's prefix."""
    try:
        parse_span(value)
    except InvalidArgument as exc:
        raise ValueError(exc.detail) from None
    return value


def _variable_name(value: str | None) -> str | None:
    """A `password_env` value: the name of an environment variable. Anything else is refused without
    being echoed, since it may be the password itself."""
    if value is not None and not _ENV_NAME.fullmatch(value):
        raise ValueError(
            "must be the NAME of an environment variable (letters, digits and _), not the password itself"
        )
    return value


class MqttTls(Model):
    """TLS to the broker: present (even as {}) means on. The broker's certificate is always verified."""

    ca_file: Path | None = Field(
        default=None, description="CA certificates (PEM) to verify the broker with; default: the system's."
    )
    cert_file: Path | None = Field(default=None, description="Client certificate (PEM), for mutual TLS.")
    key_file: Path | None = Field(
        default=None, description="The client certificate's private key (PEM), if not in cert_file."
    )
    insecure: bool = Field(
        default=False,
        description="Skip the check that the certificate names the broker's host. For tests only: "
        "it lets anyone with a certificate from the same CA pose as the broker; logged as a warning.",
    )

    @model_validator(mode="after")
    def _key_needs_certificate(self) -> Self:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file (the client certificate the key belongs to)")
        return self

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS client context: the broker's certificate verified, ours presented if configured.

        Raises ConfigError naming the file that cannot be loaded, so that a bad path stops the server
        at start-up (check-config included) rather than failing every connection attempt.
        """
        try:
            context = ssl.create_default_context(cafile=self.ca_file and self.ca_file.expanduser())
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"mqtt.tls.ca_file: cannot load CA certificates from {self.ca_file}: {exc}"
            ) from None
        if self.cert_file is not None:
            key = self.key_file and self.key_file.expanduser()
            try:
                context.load_cert_chain(self.cert_file.expanduser(), key)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"mqtt.tls.cert_file: cannot load the client certificate {self.cert_file}"
                    f"{f' with the key {self.key_file}' if key else ''}: {exc}"
                ) from None
        context.check_hostname = not self.insecure
        return context


class MqttSettings(Model):
    """How to reach the broker. Secrets come from exactly one of password, password_env, password_file."""

    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    password_env: str | None = Field(
        default=None, description="Name of an environment variable that holds the password."
    )
    password_file: Path | None = Field(
        default=None, description="A file whose content (trailing newline stripped) is the password."
    )
    keepalive: Annotated[int, Field(ge=0, le=65535)] = 60
    client_id: str | None = Field(
        default=None,
        description="MQTT client id; default mcpmqtt-<host>-<random>, unique per process so that two "
        "servers never disconnect each other.",
    )
    protocol: Literal["5", "3.1.1"] = Field(
        default="5", description='"5" (falls back to 3.1.1 if the broker refuses it) or "3.1.1".'
    )
    reply_topic_prefix: str = Field(
        default="mcpmqtt/replies",
        description="Where mqtt_query's private reply topics live: <prefix>/<random>/<correlation id>.",
    )
    tls: MqttTls | None = Field(default=None, description="TLS settings; absent: plain TCP.")
    transport: Literal["tcp", "websockets"] = Field(
        default="tcp", description='"websockets" for MQTT over WebSockets (wss:// with tls).'
    )
    websocket_path: str = Field(default="/mqtt", description="The broker's WebSocket path.")
    max_qos: Literal[0, 1, 2] = Field(
        default=2,
        description="The highest QoS mqtt_publish and mqtt_query may use; a higher one is refused with "
        "invalid argument before it reaches the broker. Set 1 for brokers without QoS 2 (NATS drops the "
        "connection, and every call on it, on a QoS 2 publish). On MQTT 5 the broker's own Maximum QoS "
        "lowers it further.",
    )

    @field_validator("password_env")
    @classmethod
    def _names_a_variable(cls, value: str | None) -> str | None:
        return _variable_name(value)

    @field_validator("reply_topic_prefix")
    @classmethod
    def _prefix_is_a_topic(cls, value: str) -> str:
        if problem := name_problem(value):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _one_password_source(self) -> Self:
        given = [k for k in ("password", "password_env", "password_file") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(
                f"give only one of password, password_env, password_file (got {', '.join(given)})"
            )
        return self

    def resolved_password(self) -> str | None:
        """The password from whichever source is configured; errors name the missing source."""
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(
                    f"mqtt.password_env: the environment variable {self.password_env} is not set"
                )
            return value
        if self.password_file is not None:
            path = self.password_file.expanduser()
            try:
                return path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"mqtt.password_file: cannot read {path}: {exc.strerror}") from None
        return self.password

    def resolved_client_id(self) -> str:
        """The configured client id, or a fresh unique one for this process."""
        return self.client_id or f"mcpmqtt-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


class TopicEntry(Model):
    """One allowlist entry: an MQTT filter pattern and what an agent may do with matching topics."""

    pattern: str
    permissions: Annotated[list[Literal["read", "write"]], Field(min_length=1)]
    description: str = ""
    live: bool = Field(
        default=True,
        description="Keep the last message of topics matching this read pattern in the live state "
        "(live_state); false for chatty or sensitive topics that should only be read on demand.",
    )

    deny: bool = Field(
        default=False,
        description="A deny entry: refuses what its permissions name on matching topics, before any "
        "allow entry is consulted (as Mosquitto does).",
    )
    max_payload_bytes: Annotated[int, Field(ge=1, le=268_435_455)] | None = Field(
        default=None, description="The largest payload an agent may publish to matching topics."
    )
    payload_schema: dict[str, Any] | None = Field(
        default=None,
        description="A JSON Schema that every payload published to matching topics must satisfy.",
    )
    rate_limit: str | None = Field(
        default=None,
        description='At most this many publishes to matching topics, all agents together: "10/minute"; '
        "units second, minute, hour, day.",
    )
    confirm: bool | Literal["console"] = Field(
        default=False,
        description="A person must agree to each publish to matching topics: true asks the person at the "
        "MCP client (elicitation), or puts the publish in the operator console's approval queue when "
        'the client cannot be asked and the console is served; "console" always uses the queue.',
    )

    @field_validator("confirm", mode="before")
    @classmethod
    def _confirm_is_known(cls, value: Any) -> Any:
        if value is True or value is False or value == "console":
            return value
        raise ValueError(f'must be true, false or "console" (got {value!r})')

    @field_validator("description", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value  # the original mcpMQTT accepted null here

    @field_validator("payload_schema")
    @classmethod
    def _schema_is_usable(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and (problem := schema_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("rate_limit")
    @classmethod
    def _rate_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)
        return value

    @model_validator(mode="after")
    def _guardrails_fit(self) -> Self:
        # A setting that could never apply is refused, like an unknown key: the operator believes it works.
        guarding = [
            key
            for key in ("max_payload_bytes", "payload_schema", "rate_limit")
            if getattr(self, key) is not None
        ] + (["confirm"] if self.confirm else [])
        if self.deny and split_shared(self.pattern)[0] is not None:
            raise ValueError(
                f"a deny entry cannot be a shared subscription ({self.pattern!r}); write the plain filter "
                f"{split_shared(self.pattern)[1]!r}, which denies it in every group"
            )
        one = len(guarding) == 1
        if self.deny and guarding:
            raise ValueError(
                f"{', '.join(guarding)} cannot be set on a deny entry (it refuses publishing outright); "
                f"put {'it' if one else 'them'} on the entry that allows the publishing"
            )
        if guarding and "write" not in self.permissions:
            raise ValueError(
                f"{', '.join(guarding)} {'guards' if one else 'guard'} publishing, and this entry does "
                f'not grant write; add "write" to its permissions or move {"it" if one else "them"} to '
                "a write entry"
            )
        return self

    @field_validator("pattern")
    @classmethod
    def _pattern_is_a_filter(cls, value: str) -> str:
        if problem := filter_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("permissions")
    @classmethod
    def _once_each(cls, value: list[Literal["read", "write"]]) -> list[Literal["read", "write"]]:
        return sorted(set(value))  # ["read", "read"] loaded in the original


class LoggingSettings(Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    logfile: Path | None = None

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class Limits(Model):
    """Bounds on what one tool call may ask for, so that one agent cannot exhaust the server."""

    max_payload_bytes: Annotated[int, Field(ge=1, le=268_435_455)] = 1_048_576
    max_messages: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    max_timeout: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    max_result_bytes: Annotated[int, Field(ge=1, le=268_435_455)] = Field(
        default=1_048_576,
        description="Payload bytes one call returns at most; further messages are left out and the "
        "result says how many (so that a chatty topic cannot flood a model's context).",
    )


class LiveStateSettings(Model):
    """The last-value cache behind mqtt_list_topics, mqtt_last and the topic resources."""

    enabled: bool = True
    max_topics: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    max_payload_bytes: Annotated[int, Field(ge=0, le=268_435_455)] = Field(
        default=65_536, description="Bytes of each topic's last payload kept; longer ones are cut."
    )
    notify_interval: Annotated[float, Field(ge=0.05, le=3600)] = Field(
        default=1.0,
        description="Seconds between two resources/updated notifications for one topic: a fast "
        "topic's updates within this window are coalesced into one.",
    )


class WatchSettings(Model):
    """Watches (mqtt_watch, mqtt_poll, mqtt_unwatch): bounds per caller, so one agent cannot exhaust them."""

    enabled: bool = True
    max_watches: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=20, description="Watches one caller (session, API key or token client) may hold at once."
    )
    buffer_size: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=100,
        description="Matches one watch keeps until polled; past it the oldest is dropped and counted.",
    )
    max_buffer_bytes: Annotated[int, Field(ge=1, le=268_435_455)] = Field(
        default=1_048_576, description="Payload bytes one watch keeps at most; past it the oldest is dropped."
    )
    max_ttl: str = Field(
        default="24h", description='The longest ttl a watch may ask for, as a span: "30m", "24h", "7d".'
    )

    @field_validator("max_ttl")
    @classmethod
    def _ttl_parses(cls, value: str) -> str:
        return _span(value)

    @property
    def max_ttl_seconds(self) -> float:
        return parse_span(self.max_ttl)


class HistorySettings(Model):
    """What mqtt_history answers from: every message on the live state's read patterns, kept per topic.

    Oldest messages go first when any bound is reached, and are counted (mqtt_history's `dropped`).
    """

    enabled: bool = True
    max_messages_per_topic: Annotated[int, Field(ge=1, le=100_000_000)] = Field(
        default=1000, description="Messages kept per topic; the oldest is dropped for a new one."
    )
    max_age: str = Field(
        default="24h",
        description='How long a message is kept: a span such as "90m", "24h" or "7d" (s, m, h, d, w).',
    )
    max_bytes: Annotated[int, Field(ge=1024, le=1 << 40)] = Field(
        default=64 * 1024 * 1024,
        description="Memory the whole history may take: each message counts its payload plus about "
        "160 bytes of bookkeeping, each topic about 800 bytes.",
    )
    path: Path | None = Field(
        default=None,
        description="A SQLite database file that keeps the history across restarts (created if "
        "missing); relative to the config file's folder. Absent: in memory only.",
    )
    flush_interval: Annotated[float, Field(ge=0.05, le=60)] = Field(
        default=1.0,
        description="Seconds between writes to the file: a crash (even kill -9) loses at most the "
        "messages of the last interval.",
    )

    @field_validator("max_age")
    @classmethod
    def _age_is_a_span(cls, value: str) -> str:
        return _span(value)

    @property
    def max_age_seconds(self) -> float:
        return parse_span(self.max_age)


class ApprovalsSettings(Model):
    """The approval queue of the operator console: publishes waiting for a person (held in memory)."""

    wait: Annotated[float, Field(ge=0, le=60)] = Field(
        default=10.0,
        description="Seconds a publish waiting for approval holds the agent's call before it returns a "
        "pending result with the approval id (the agent asks mqtt_approval for the outcome later).",
    )
    ttl: Annotated[float, Field(ge=1, le=7 * 86_400)] = Field(
        default=3600.0,
        description="Seconds an undecided approval waits before it expires (and is never published); "
        "a decided one is remembered as long again for mqtt_approval.",
    )
    max_pending: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=100, description="Approvals waiting at once; a publish beyond them is refused."
    )


class DiscoverySettings(Model):
    """Discovery of devices from the conventions they announce themselves with (docs/devices.md).

    Read from the messages the live state follows (read patterns without `live: false`), so the
    allowlist must let the server read a convention's discovery topics for it to be seen.
    """

    enabled: bool = Field(
        default=True, description="Read discovery messages and offer mqtt_list_devices and mqtt_describe."
    )
    enforce_command_schemas: bool = Field(
        default=False,
        description="Refuse (invalid argument) a publish or query request to a discovered command topic "
        "whose payload the device's announced command schema does not allow. Only narrows the allowlist.",
    )
    home_assistant_prefix: str | None = Field(
        default="homeassistant",
        description="Home Assistant's discovery prefix (<prefix>/<component>/.../config); null: not read.",
    )
    zigbee2mqtt_base: str | None = Field(
        default="zigbee2mqtt", description="zigbee2mqtt's base topic (<base>/bridge/devices); null: not read."
    )
    homie_domain: str | None = Field(
        default="homie", description="The Homie domain, first level of Homie 4 and 5 topics; null: not read."
    )
    tasmota_prefix: str | None = Field(
        default="tasmota/discovery",
        description="Tasmota's discovery topic (<prefix>/<MAC>/config and /sensors); null: not read.",
    )
    max_devices: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=1000, description="Devices kept; the least recently announced one is forgotten first."
    )
    max_entities_per_device: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=500, description="Entities kept per device; further ones are dropped with a log line."
    )
    max_config_bytes: Annotated[int, Field(ge=1, le=268_435_455)] = Field(
        default=262_144,
        description="The largest discovery message read (a big zigbee2mqtt network's bridge/devices may "
        "need more); larger ones are skipped with a log line.",
    )
    max_pending: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=10_000,
        description="Discovery messages waiting to be read; past this, new ones are dropped and counted.",
    )

    @field_validator("home_assistant_prefix", "zigbee2mqtt_base", "homie_domain", "tasmota_prefix")
    @classmethod
    def _prefix_is_a_topic(cls, value: str | None) -> str | None:
        if value is not None and (problem := name_problem(value)):
            raise ValueError(problem)
        return value

    def options(self) -> DiscoveryOptions:
        """The parsers' view of this section."""
        return DiscoveryOptions(
            home_assistant_prefix=self.home_assistant_prefix,
            zigbee2mqtt_base=self.zigbee2mqtt_base,
            homie_domain=self.homie_domain,
            tasmota_prefix=self.tasmota_prefix,
            max_devices=self.max_devices,
            max_entities_per_device=self.max_entities_per_device,
            max_config_bytes=self.max_config_bytes,
        )


class ShapesSettings(Model):
    """Payload shapes inferred from observation: a JSON Schema per topic from the JSON payloads seen.

    Rides on the live state's subscriptions (live_state.enabled and each pattern's `live`).
    """

    enabled: bool = True
    max_topics: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        default=10_000, description="Topics whose shape is kept; the least recently seen is forgotten first."
    )
    sample_interval: Annotated[float, Field(ge=0.01, le=3600)] = Field(
        default=1.0,
        description="Seconds between two payloads of one topic that shape its schema: the inference "
        "stays off the per-message path, whatever the message rate.",
    )
    max_sample_bytes: Annotated[int, Field(ge=1, le=16_777_216)] = Field(
        default=65_536, description="Longer payloads are counted but not sampled."
    )
    max_schema_bytes: Annotated[int, Field(ge=256, le=16_777_216)] = Field(
        default=16_384,
        description="A topic's schema that would grow past this size (as JSON) stops being updated.",
    )
    max_examples: Annotated[int, Field(ge=0, le=100)] = Field(
        default=3, description="Distinct example payloads kept per topic (those up to 1 KiB)."
    )


class SparkplugSettings(Model):
    """Sparkplug B: payloads decoded, and edge nodes' births, deaths and sequence numbers tracked.

    Births are tracked on the live state's subscriptions (live_state.enabled and each pattern's
    `live`); payloads are decoded wherever messages reach an agent.
    """

    enabled: bool = True
    max_edge_nodes: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=1_000, description="Edge nodes tracked; the least recently heard is forgotten first."
    )
    max_devices_per_node: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=1_000, description="Devices tracked per edge node."
    )
    max_metrics: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=10_000, description="Metrics kept from each node's or device's birth."
    )


class StateSettings(Model):
    """Where state that replicas share is kept: today the rate-limit windows of the guardrails.

    ``memory`` (the default) keeps it in this process, so each replica counts its own publishes;
    ``redis`` keeps it in one Redis (or any Redis-protocol server), so N replicas behave as one.
    """

    backend: Literal["memory", "redis"] = Field(
        default="memory",
        description='"memory": in this process; "redis": shared by every server using the same Redis.',
    )
    url: str | None = Field(
        default=None,
        description="The Redis URL, redis://[user:password@]host:port/db (rediss:// for TLS); needed "
        "for the redis backend.",
        repr=False,
    )
    password_env: str | None = Field(
        default=None,
        description="Name of an environment variable holding the Redis password (instead of putting "
        "it in url).",
    )
    key_prefix: str = Field(
        default="mcpmqtt",
        description="Prefix of every Redis key the server writes; servers that should share limits "
        "use the same prefix.",
    )
    timeout: Annotated[float, Field(gt=0, le=30)] = Field(
        default=2.0,
        description="Seconds to wait for Redis to connect or answer; a publish that needs Redis and "
        "gets no answer in time is refused.",
    )

    @field_validator("password_env")
    @classmethod
    def _names_a_variable(cls, value: str | None) -> str | None:
        return _variable_name(value)

    @model_validator(mode="after")
    def _redis_has_a_url(self) -> Self:
        if self.backend == "redis":
            if self.url is None:
                raise ValueError('the redis backend needs url, as in "redis://localhost:6379/0"')
            if not self.url.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError("url must start with redis://, rediss:// or unix://")
        return self

    def resolved_password(self) -> str | None:
        """The password from password_env, if one is named (the url may carry one instead)."""
        if self.password_env is None:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            raise ConfigError(f"state.password_env: the environment variable {self.password_env} is not set")
        return value


class AuditSettings(Model):
    """The audit log: one JSON line per tool call, for the people responsible for the devices."""

    path: Path = Field(description="The JSONL file, appended to; relative to the config file's folder.")
    include_payloads: bool = Field(
        default=False, description="Also record the payloads published; off, only their size and SHA-256."
    )


class PromptArgumentEntry(Model):
    """One argument of an operator's prompt, filled into its template's {name} placeholders."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]
    description: str = ""
    required: bool = True


class PromptEntry(Model):
    """A prompt written by the operator: a template with {argument} placeholders."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
    description: str = ""
    arguments: list[PromptArgumentEntry] = Field(default_factory=list)
    template: Annotated[str, Field(min_length=1)]

    @model_validator(mode="after")
    def _placeholders_are_arguments(self) -> Self:
        names = [argument.name for argument in self.arguments]
        if len(set(names)) < len(names):
            raise ValueError(f"prompt {self.name!r} names an argument twice ({', '.join(names)})")
        used = placeholders(self.template)
        if unknown := [name for name in used if name not in names]:
            raise ValueError(
                f"the template of prompt {self.name!r} uses {', '.join('{' + n + '}' for n in unknown)}, "
                f"which {'is not an argument' if len(unknown) == 1 else 'are not arguments'}; "
                f"declare it under arguments or fix the spelling (arguments: {', '.join(names) or 'none'})"
            )
        if unused := [name for name in names if name not in used]:
            raise ValueError(
                f"prompt {self.name!r} declares the argument{'s' if len(unused) > 1 else ''} "
                f"{', '.join(unused)} but its template never uses "
                f"{'it' if len(unused) == 1 else 'them'}; add {'{' + unused[0] + '}'} to the template "
                "or remove the argument"
            )
        return self


class Config(Model):
    """The whole config file."""

    mqtt: MqttSettings = MqttSettings()
    topics: Annotated[list[TopicEntry], Field(min_length=1)]
    logging: LoggingSettings = LoggingSettings()
    limits: Limits = Limits()
    live_state: LiveStateSettings = LiveStateSettings()
    watches: WatchSettings = WatchSettings()
    history: HistorySettings = HistorySettings()
    approvals: ApprovalsSettings = ApprovalsSettings()
    discovery: DiscoverySettings = DiscoverySettings()
    shapes: ShapesSettings = ShapesSettings()
    sparkplug: SparkplugSettings = SparkplugSettings()
    state: StateSettings = StateSettings()
    audit: AuditSettings | None = None
    prompts: list[PromptEntry] = Field(default_factory=list)
    http: HttpSettings = HttpSettings()

    @field_validator("prompts")
    @classmethod
    def _prompt_names_unique(cls, value: list[PromptEntry]) -> list[PromptEntry]:
        seen: set[str] = set()
        for entry in value:
            if entry.name in BUILTIN_PROMPTS:
                raise ValueError(
                    f"the prompt name {entry.name!r} is taken by a built-in prompt "
                    f"({', '.join(sorted(BUILTIN_PROMPTS))}); choose another name"
                )
            if entry.name in seen:
                raise ValueError(f"two prompts are named {entry.name!r}; prompt names must be unique")
            seen.add(entry.name)
        return value

    def allowlist(self) -> Allowlist:
        """The policy object built from the topics section, and the fence around the reply topics.

        The private reply topics (``mqtt.reply_topic_prefix``) carry every session's query replies
        and correlation data; they are the server's own, so an allow entry that reaches them (``#``)
        gets a deny entry beside it: a filter inside them is refused, and messages on them are
        withheld from a filter that overlaps them. The server's own reply routing is not an agent's
        subscription and does not pass through the allowlist.
        """
        rules = [Rule(t.pattern, frozenset(t.permissions), t.description, t.deny) for t in self.topics]
        replies = f"{self.mqtt.reply_topic_prefix}/#"
        if any(not rule.deny and overlaps(split_shared(rule.pattern)[1], replies) for rule in rules):
            rules.append(Rule(replies, frozenset({"read", "write"}), REPLY_TOPICS, deny=True))
        return Allowlist(rules)

    def guardrails(self) -> Guardrails:
        """The publish guardrails of the write entries; build it once, since it counts publishes."""
        return Guardrails(
            [
                Guardrail(
                    t.pattern,
                    max_payload_bytes=t.max_payload_bytes,
                    payload_schema=t.payload_schema,
                    rate_limit=parse_rate(t.rate_limit) if t.rate_limit is not None else None,
                    confirm=t.confirm,
                )
                for t in self.topics
                if "write" in t.permissions and not t.deny
            ]
        )
