"""The operator console in a real browser: Debian's Chromium driven by Playwright for Python.

Against a real `mcpmqtt serve` over HTTP with API keys and the real broker; the agent is the SDK's
MCP client, devices and the spy are plain MQTT clients. Skipped, saying which package to install,
where Chromium is missing. With MCPMQTT_SCREENSHOTS=<folder> the first test also saves the
screenshots of docs/console.md there.
"""

import os
import pathlib
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from console_server import ConsoleServer, start_console_server
from devices import raw_client
from http_server import http_client
from mcp_client import structured
from mosquitto import Mosquitto
from server_config import unique_root

pytestmark = pytest.mark.anyio
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = unique_root()
MARKER = b"--marker--"

if not os.path.exists(CHROMIUM) or shutil.which("chromium") is None:
    pytest.skip(
        "install Debian's chromium package (apt-get install chromium) to run the console's browser tests",
        allow_module_level=True,
    )
playwright_api = pytest.importorskip("playwright.async_api", reason="install the dev extras (playwright)")
expect = playwright_api.expect


@pytest.fixture(scope="module")
def served(broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    server = start_console_server(tmp_path_factory.mktemp("console"), broker, ROOT)
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


class Watched:
    """A page, with every console error, uncaught exception and dialog it produced."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("dialog", self._dialog)

    async def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()


async def open_console(browser: Any, served: ConsoleServer, key: str | None = "ops") -> Watched:
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    watched = Watched(await context.new_page())
    page = watched.page
    await page.goto(served.console)
    if key is not None:
        await page.fill("#key", served.keys[key])
        await page.click("#signin button")
    await expect(page.locator("#connection")).to_have_text("live")
    return watched


async def queue_publish(served: ConsoleServer, topic: str, payload: str) -> str:
    async with http_client(served.process.url, served.keys["agent"]) as agent:
        result = structured(
            await agent.call_tool("mqtt_publish", {"topic": f"{ROOT}/{topic}", "payload": payload, "qos": 1})
        )
    assert result["status"] == "pending"
    approval_id: str = result["approval_id"]
    return approval_id


async def received_until_marker(spy: Any) -> list[bytes]:
    got: list[bytes] = []
    with anyio.fail_after(10):
        async for message in spy.messages:
            if message.payload == MARKER:
                return got
            got.append(message.payload)
    raise AssertionError("the spy's stream ended")


async def device_publish(broker: Mosquitto, topic: str, payload: bytes, retain: bool = False) -> None:
    async with raw_client(broker) as device:
        await device.publish(topic, payload, qos=1, retain=retain)


def leaf(page: Any, topic: str) -> Any:
    return page.locator(f'#tree li.leaf[data-topic="{topic}"] > .row > .value')


async def test_the_console_loads_cleanly_and_shows_a_change_within_two_seconds(
    browser: Any, served: ConsoleServer, broker: Mosquitto
) -> None:
    topic = f"{ROOT}/sensors/kitchen/temperature"
    await device_publish(broker, topic, b"20.5")
    watched = await open_console(browser, served)
    page = watched.page
    await expect(leaf(page, topic)).to_have_text("20.5")
    started = time.monotonic()
    await device_publish(broker, topic, b"22.75")
    await expect(leaf(page, topic)).to_have_text("22.75", timeout=2000)
    assert time.monotonic() - started < 2.0
    # The history keeps both readings: the topic's row draws them as a sparkline.
    spark = page.locator(f'#tree li.leaf[data-topic="{topic}"] > .row > .spark polyline')
    await expect(spark).to_have_count(1, timeout=2000)
    assert "No sparklines" not in await page.locator("#notices").inner_text()
    assert watched.errors == []
    if folder := os.environ.get("MCPMQTT_SCREENSHOTS"):
        await screenshots(page, served, broker, pathlib.Path(folder))
    await page.context.close()


async def screenshots(page: Any, served: ConsoleServer, broker: Mosquitto, folder: pathlib.Path) -> None:
    """The pictures of docs/console.md: some topics, a few calls, one approval waiting."""
    await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
    for room, value in [
        ("living/temperature", b"21.4"),
        ("living/humidity", b"48"),
        ("garage/door", b"closed"),
    ]:
        await device_publish(broker, f"{ROOT}/sensors/{room}", value)
    async with http_client(served.process.url, served.keys["agent"]) as agent:
        await agent.call_tool("mqtt_publish", {"topic": f"{ROOT}/lab/lamp", "payload": "on"})
        await agent.call_tool("mqtt_publish", {"topic": f"{ROOT}/sensors/x", "payload": "1"})
    await queue_publish(served, "door/front/lock", '{"state": "unlocked"}')
    await expect(page.locator("#queue li.pending")).not_to_have_count(0)
    await page.locator("#topics-panel").screenshot(path=folder / "console-topics.png")
    await page.locator("#feed-panel").screenshot(path=folder / "console-feed.png")
    await page.locator("#queue-panel").screenshot(path=folder / "console-queue.png")


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_a_queued_publish_is_sent_once_when_approved_and_never_when_rejected(
    browser: Any, served: ConsoleServer, broker: Mosquitto, decision: str
) -> None:
    topic = f"door/{decision}"
    watched = await open_console(browser, served)
    page = watched.page
    async with raw_client(broker) as spy:
        await spy.subscribe(f"{ROOT}/{topic}", qos=1)
        approval_id = await queue_publish(served, topic, "unlock")
        item = page.locator(f'#queue li[data-id="{approval_id}"]')
        await expect(item.locator(".topic")).to_have_text(f"{ROOT}/{topic}")
        await item.locator(f"button.{decision}").click()
        status = "published" if decision == "approve" else "rejected"
        await expect(item).to_have_class(f"approval {status}")
        await expect(item.locator("button")).to_have_count(0)
        await expect(item.locator(".status")).to_contain_text(f"{status} by api-key:ops")
        await device_publish(broker, f"{ROOT}/{topic}", MARKER)
        assert await received_until_marker(spy) == ([b"unlock"] if decision == "approve" else [])
    assert watched.errors == []
    await page.context.close()


async def test_an_expired_approval_is_never_sent(
    browser: Any, broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    short = start_console_server(tmp_path, broker, ROOT, ttl=1)
    try:
        watched = await open_console(browser, short)
        page = watched.page
        async with raw_client(broker) as spy:
            await spy.subscribe(f"{ROOT}/door/expiring", qos=1)
            approval_id = await queue_publish(short, "door/expiring", "unlock")
            item = page.locator(f'#queue li[data-id="{approval_id}"]')
            await expect(item).to_have_class("approval expired", timeout=10_000)
            await expect(item.locator("button")).to_have_count(0)
            await device_publish(broker, f"{ROOT}/door/expiring", MARKER)
            assert await received_until_marker(spy) == []
        await page.context.close()
    finally:
        short.process.stop()


async def test_payloads_and_topics_render_as_text_and_run_nothing(
    browser: Any, served: ConsoleServer, broker: Mosquitto
) -> None:
    payload = "<img src=x onerror=alert(1)>"
    script_topic = f"{ROOT}/sensors/<script>alert(2)</script>"
    await device_publish(broker, f"{ROOT}/sensors/xss", payload.encode())
    await device_publish(broker, script_topic, b"<b>bold?</b>")
    approval_id = await queue_publish(served, "door/<script>alert(3)</script>", payload)
    watched = await open_console(browser, served)
    page = watched.page
    await expect(leaf(page, f"{ROOT}/sensors/xss")).to_have_text(payload)
    await expect(page.locator("#tree .name", has_text="<script>alert(2)<")).to_have_count(1)
    queued = page.locator(f'#queue li[data-id="{approval_id}"]')
    await expect(queued.locator(".payload")).to_have_text(payload)
    await expect(queued.locator(".topic")).to_have_text(f"{ROOT}/door/<script>alert(3)</script>")
    assert await page.locator("main img, main script, main b").count() == 0
    assert watched.dialogs == []
    assert watched.errors == []
    await page.context.close()


async def test_a_key_narrowed_to_sensors_sees_nothing_else(
    browser: Any, served: ConsoleServer, broker: Mosquitto
) -> None:
    await device_publish(broker, f"{ROOT}/sensors/porch/light", b"5")
    await device_publish(broker, f"{ROOT}/lab/private", b"secret")
    await queue_publish(served, "door/narrowed", "open")
    ops = await open_console(browser, served)  # the whole picture holds the other topics ...
    await expect(leaf(ops.page, f"{ROOT}/lab/private")).to_have_text("secret")
    await expect(ops.page.locator("#queue .topic", has_text=f"{ROOT}/door/narrowed")).to_have_count(1)
    await ops.page.context.close()

    watched = await open_console(browser, served, "sensors")  # ... which the narrowed key never sees
    page = watched.page
    await expect(leaf(page, f"{ROOT}/sensors/porch/light")).to_have_text("5")
    leaves = await page.locator("#tree li.leaf").evaluate_all("nodes => nodes.map(n => n.dataset.topic)")
    assert leaves, "the tree is empty"
    assert all(topic.startswith(f"{ROOT}/sensors/") for topic in leaves), leaves
    texts = await page.locator("#feed .topic, #queue .topic").all_inner_texts()
    assert all(text == "" or text.startswith(f"{ROOT}/sensors/") for text in texts), texts
    assert "secret" not in await page.locator("main").inner_text()
    await expect(page.locator("#who")).to_have_text("api-key:sensors (may approve)")
    await page.context.close()


async def test_a_cross_origin_post_to_approve_is_refused(
    browser: Any, served: ConsoleServer, broker: Mosquitto
) -> None:
    """A signed-in operator visits a hostile page that posts the approval (a classic CSRF form, and a
    fetch with credentials); neither reaches a decision."""
    approval_id = await queue_publish(served, "door/csrf", "unlock")
    watched = await open_console(browser, served)
    context = watched.page.context
    target = f"{served.console}/approvals/{approval_id}/approve"
    hostile = f"""<!doctype html><form id=f method=post action="{target}"></form>
    <script>
      fetch("{target}", {{method: "POST", credentials: "include", mode: "no-cors"}})
        .finally(() => document.getElementById("f").submit());
    </script>"""
    await context.route(
        "http://evil.test/**", lambda route: route.fulfill(body=hostile, content_type="text/html")
    )
    evil = await context.new_page()
    async with evil.expect_navigation(url=target):
        await evil.goto("http://evil.test/")
    assert "published" not in await evil.content()
    await evil.close()
    async with raw_client(broker) as spy:
        await spy.subscribe(f"{ROOT}/door/csrf", qos=1)
        item = watched.page.locator(f'#queue li[data-id="{approval_id}"]')
        await expect(item).to_have_class("approval pending")
        await device_publish(broker, f"{ROOT}/door/csrf", MARKER)
        assert await received_until_marker(spy) == []
    ops = served.signed_in("ops")
    assert ops.post(f"/console/approvals/{approval_id}/reject").json()["status"] == "rejected"
    await context.close()
