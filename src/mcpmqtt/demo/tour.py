"""`mcpmqtt demo --tour`: the demo, driven once through every tool and a prompt, printed as a transcript.

The tour talks to the server the way an agent host does, with the MCP SDK's client over Streamable
HTTP, so a tour that passes shows that the broker, the devices, the server and the transport all
work on this machine. The transcript is the command's output (stdout); logs stay on stderr.
"""

import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp.client import Client
from mcp_types import CallToolResult, TextContent, TextResourceContents

from mcpmqtt.demo.config import DEMO_TOPICS, ROOMS, demo_config
from mcpmqtt.demo.console import Style
from mcpmqtt.demo.devices import PRINTER_REQUESTS, PRINTER_RESPONSES, PRINTER_STATUS
from mcpmqtt.demo.embedded import HOST, BrokerChoice, EmbeddedBroker, ensure_free, free_port
from mcpmqtt.demo.runner import mcp_url, run_with_broker, running_devices, wait_started
from mcpmqtt.server.build import build_server
from mcpmqtt.transports.http import http_server

STEP_TIMEOUT = 15.0
LIGHT = ROOMS[0]
STATUS_REQUEST = '{"command": "status"}'


class StepFailed(Exception):
    """A step got an answer, but not the one the demo's devices give."""


Step = Callable[[Client, EmbeddedBroker], Awaitable[list[str]]]


def _result(result: CallToolResult) -> dict[str, Any]:
    if result.is_error or result.structured_content is None:
        text = result.content[0].text if isinstance(result.content[0], TextContent) else "(no text)"
        raise StepFailed(f"the tool returned an error: {text}")
    data: dict[str, Any] = result.structured_content
    return data


def _show(message: dict[str, Any]) -> str:
    retained = " (retained)" if message["retain"] else ""
    return f"{message['topic']}: {message['payload']}{retained}"


async def _read_allowlist(client: Client, broker: EmbeddedBroker) -> list[str]:
    result = await client.read_resource("mcpmqtt://topics/allowed")
    content = result.contents[0]
    if not isinstance(content, TextResourceContents):
        raise StepFailed("the resource is not text")
    topics = json.loads(content.text)["topics"]
    if [t["pattern"] for t in topics] != [t.pattern for t in DEMO_TOPICS]:
        raise StepFailed(f"unexpected allowlist: {topics}")
    return [f"{t['pattern']:<23} {'+'.join(t['permissions'])}" for t in topics]


async def _read_system_status(client: Client, broker: EmbeddedBroker) -> list[str]:
    read = _result(await client.call_tool("mqtt_read", {"topic": "status/system", "timeout": 5}))
    if read["message"] is None:
        raise StepFailed("no retained status on status/system")
    return [_show(read["message"])]


async def _subscribe_to_temperatures(client: Client, broker: EmbeddedBroker) -> list[str]:
    arguments = {"topic": "sensors/+/temperature", "max_messages": 2, "timeout": 10}
    collected = _result(await client.call_tool("mqtt_subscribe", arguments))
    if collected["messages_received"] != 2:
        raise StepFailed(f"expected 2 readings within 10 s, got {collected['messages_received']}")
    return [_show(message) for message in collected["messages"]]


async def _list_topics(client: Client, broker: EmbeddedBroker) -> list[str]:
    listed = _result(await client.call_tool("mqtt_list_topics", {}))
    if not listed["topics"]:
        raise StepFailed("the live state knows no topic, though the steps before read several")
    return [
        f"{entry['topic']}: {entry['preview']} ({entry['messages']} seen)" for entry in listed["topics"]
    ] + [f"{listed['total']} topics seen so far"]


async def _last_value(client: Client, broker: EmbeddedBroker) -> list[str]:
    last = _result(await client.call_tool("mqtt_last", {"topic": "status/system"}))
    if last["message"] is None:
        raise StepFailed("the live state holds no message on status/system, which step 2 read")
    return [f"{_show(last['message'])}, {last['age_seconds']:.1f} s old, answered at once"]


async def _list_devices(client: Client, broker: EmbeddedBroker) -> list[str]:
    listed = _result(await client.call_tool("mqtt_list_devices", {}))
    lines = [
        f"{device['id']}: {device['device_supplied'].get('name', '')} ({len(device['entities'])} entities)"
        for device in listed["devices"]
    ]
    return [*lines, f"{listed['total']} devices announced themselves", *(listed.get("notes") or [])]


async def _describe_a_topic(client: Client, broker: EmbeddedBroker) -> list[str]:
    topic = f"actuators/lights/{LIGHT}/on"
    described = _result(await client.call_tool("mqtt_describe", {"topic": topic}))
    if not described["writable"]:
        raise StepFailed(f"{topic} is not writable, though the allowlist's actuators/# is")
    schema = described.get("command_schema")
    return [
        f"readable {described['readable']}, writable {described['writable']}, "
        f"{len(described['entities'])} discovered entities, command schema: {json.dumps(schema)}"
    ]


async def _switch_a_light(client: Client, broker: EmbeddedBroker) -> list[str]:
    topic = f"actuators/lights/{LIGHT}/on"
    published = _result(await client.call_tool("mqtt_publish", {"topic": topic, "payload": "on", "qos": 1}))
    lines = [f"published {published['bytes']} bytes to {topic} at qos 1, acknowledged by the broker"]
    # The light reports its new state a moment after the command: read until it does.
    with anyio.move_on_after(5):
        while True:
            read = _result(await client.call_tool("mqtt_read", {"topic": f"status/lights/{LIGHT}"}))
            message = read["message"]
            if message is not None and json.loads(message["payload"]).get("state") == "on":
                return [*lines, f"mqtt_read -> {_show(message)}"]
            await anyio.sleep(0.1)
    raise StepFailed(f"status/lights/{LIGHT} did not report the light on within 5 s")


async def _get_a_prompt(client: Client, broker: EmbeddedBroker) -> list[str]:
    arguments = {"request_topic": PRINTER_REQUESTS, "command": STATUS_REQUEST}
    prompt = await client.get_prompt("device_request", arguments)
    content = prompt.messages[0].content if prompt.messages else None
    if not isinstance(content, TextContent) or "mqtt_query" not in content.text:
        raise StepFailed(f"the prompt does not ask for mqtt_query: {prompt}")
    first_line, _, rest = content.text.partition("\n")
    return [first_line, f"(and {len(rest.splitlines())} more lines; the next step does what it asks)"]


async def _ask_the_printer(client: Client, broker: EmbeddedBroker) -> list[str]:
    arguments: dict[str, Any] = {"request_topic": PRINTER_REQUESTS, "payload": STATUS_REQUEST}
    if broker.protocol == "3.1.1":
        # No response topic or correlation data in 3.1.1: name the reply topic, carry the id inside.
        arguments["payload"] = '{"command": "status", "correlation_id": "tour-1"}'
        arguments["response_topic"] = PRINTER_RESPONSES
    query = _result(await client.call_tool("mqtt_query", arguments))
    response = query["response"]
    if response is None:
        raise StepFailed(f"no reply on {query['response_topic']} within 5 s")
    reply = json.loads(response["payload"])
    if broker.protocol == "3.1.1":
        correlated = reply.get("correlation_id") == "tour-1"
        how = "the correlation_id echoed in the payload"
    else:
        correlated = (response.get("properties") or {}).get("correlation_data") == query["correlation_id"]
        how = "its correlation data echoed"
    if not reply.get("ok") or not correlated:
        raise StepFailed(f"unexpected reply: {response}")
    return [
        f"request: {arguments['payload']}",
        f"reply on {response['topic']} ({how}):",
        f"  {response['payload']}",
    ]


async def _show_a_refusal(client: Client, broker: EmbeddedBroker) -> list[str]:
    topic = f"sensors/{ROOMS[0]}/temperature"
    result = await client.call_tool("mqtt_publish", {"topic": topic, "payload": "99"})
    text = result.content[0].text if isinstance(result.content[0], TextContent) else ""
    if not result.is_error or not text.startswith("permission denied:"):
        raise StepFailed(f"publishing to {topic} was not refused: {text}")
    return [f"refused, as it should be: {text}"]


async def _watch_the_printer(client: Client, broker: EmbeddedBroker) -> list[str]:
    condition = {"field": "/state", "op": "==", "value": "paused"}
    made = _result(await client.call_tool("mqtt_watch", {"topic": PRINTER_STATUS, "condition": condition}))
    lines = [f"mqtt_watch {PRINTER_STATUS} where {made['condition']}: {made['watch_id']}"]
    try:
        await client.call_tool("mqtt_publish", {"topic": PRINTER_REQUESTS, "payload": "pause", "qos": 1})
        polled = _result(await client.call_tool("mqtt_poll", {"watch_id": made["watch_id"], "wait": 10}))
    finally:
        await client.call_tool("mqtt_publish", {"topic": PRINTER_REQUESTS, "payload": "resume", "qos": 1})
        await client.call_tool("mqtt_unwatch", {"watch_id": made["watch_id"]})
    if not polled["messages"]:
        raise StepFailed("the watch did not fire within 10 s of pausing the printer")
    return [
        *lines,
        f"mqtt_publish {PRINTER_REQUESTS} pause, then mqtt_poll -> {_show(polled['messages'][0])}",
        "resumed the printer and ended the watch",
    ]


async def _ask_the_history(client: Client, broker: EmbeddedBroker) -> list[str]:
    if "mqtt_history" not in {tool.name for tool in (await client.list_tools()).tools}:
        return ["skipped: this server has no mqtt_history tool"]
    topic = f"sensors/{ROOMS[0]}/temperature"
    arguments = {"topic": topic, "since": "5m", "field": "/value", "bucket": "5s"}
    history = _result(await client.call_tool("mqtt_history", arguments))
    if not history["buckets"]:
        raise StepFailed(f"no history of {topic} yet")
    return [
        f"{b['start']}: {b['count']} readings, min {b['min']}, max {b['max']}, mean {b['mean']}"
        for b in history["buckets"][-3:]
    ]


STEPS: list[tuple[str, Step]] = [
    ("read the resource mcpmqtt://topics/allowed", _read_allowlist),
    ("mqtt_read status/system", _read_system_status),
    ("mqtt_subscribe sensors/+/temperature, 2 messages", _subscribe_to_temperatures),
    ("mqtt_list_topics: what the server has seen so far", _list_topics),
    ("mqtt_last status/system: the last value, from memory", _last_value),
    ("mqtt_list_devices: the devices that announced themselves", _list_devices),
    (f"mqtt_describe actuators/lights/{LIGHT}/on: what is known about a topic", _describe_a_topic),
    (f"mqtt_publish actuators/lights/{LIGHT}/on, then mqtt_read status/lights/{LIGHT}", _switch_a_light),
    ("get the prompt device_request for the printer", _get_a_prompt),
    (f"mqtt_query {PRINTER_REQUESTS}: the printer's status", _ask_the_printer),
    (f"mqtt_publish sensors/{ROOMS[0]}/temperature (not allowed)", _show_a_refusal),
    (f"mqtt_watch {PRINTER_STATUS} until the printer pauses, mqtt_poll, mqtt_unwatch", _watch_the_printer),
    (f"mqtt_history sensors/{ROOMS[0]}/temperature in 5 s buckets", _ask_the_history),
]


def _reason(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {STEP_TIMEOUT:g} s"
    return str(exc) or type(exc).__name__


async def _run_steps(url: str, broker: EmbeddedBroker, style: Style) -> int:
    """Run every step, printing each as it goes; the number that failed."""
    failed = 0
    async with Client(url) as client:
        for number, (title, step) in enumerate(STEPS, start=1):
            print(style.bold(f"{number}. {title}"), flush=True)
            try:
                with anyio.fail_after(STEP_TIMEOUT):
                    lines = await step(client, broker)
            except Exception as exc:  # whatever went wrong, this step failed and the tour goes on
                failed += 1
                print(f"   {style.red('FAILED')}: {_reason(exc)}", flush=True)
                continue
            for line in lines:
                print(f"   {line}")
            print(f"   {style.green('ok')}", flush=True)
    return failed


async def _tour(broker: EmbeddedBroker, host: str, port: int) -> int:
    style = Style(sys.stdout)
    url = mcp_url(host, port)
    server = build_server(demo_config(broker.host, broker.port))
    web = http_server(server, "http", host, port)
    print(
        f"mcpmqtt demo tour: {broker.program} at {broker.url} (MQTT {broker.protocol}), MCP server at {url}\n"
    )
    async with running_devices(broker, server), anyio.create_task_group() as tasks:
        tasks.start_soon(web.serve)
        await wait_started(web)
        failed = await _run_steps(url, broker, style)
        web.should_exit = True
    if failed:
        print(f"\n{style.red('tour failed')}: {failed} of {len(STEPS)} steps failed")
        return 1
    print(f"\n{style.green('tour passed')}: all {len(STEPS)} steps worked")
    return 0


def run_tour(
    host: str = HOST,
    port: int | None = None,
    broker_choice: BrokerChoice = "auto",
    broker_port: int | None = None,
) -> int:
    """Start the demo (on free ports unless given), take the tour, stop everything; 0 if every step
    worked."""

    if port is None:
        port = free_port(host)
    else:
        ensure_free(host, port, "--port, or leave it out to use a free port")

    async def main(broker: EmbeddedBroker) -> int:
        return await _tour(broker, host, port)

    return run_with_broker(main, broker_choice, broker_port, interrupted=1)
