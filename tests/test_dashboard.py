"""``/dashboard``: the live page, in a real headless browser, against real load.

Everything runs for real: Redis, ``byzerllm worker`` processes (``custom/echo``,
one alias that answers and one whose backend fails), the gateway (uvicorn in a
thread) with a master key, and Debian's chromium driven by Playwright (never
a browser Playwright downloads). Load is sent with the ``openai`` SDK from a
background thread while the test waits, in the page, for its figures to move.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx2 = pytest.importorskip("httpx2")

from byzerllm.broker import deployments  # noqa: E402
from byzerllm.broker.api_keys import ApiKeys  # noqa: E402
from byzerllm.broker.connection import connect  # noqa: E402
from byzerllm.broker.keys import Keys  # noqa: E402
from tests.gateway_server import KEY, Gateway  # noqa: E402

CHROMIUM = "/usr/bin/chromium"  # Debian's; scripts/test installs it
FAILURE = "the backend is down on purpose"


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; scripts/test does)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install chromium; scripts/test does as root)"
    return None


needs_browser = pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # as root chromium refuses its sandbox; nothing here is untrusted content
        launched = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


class Console:
    """What a page said: console messages by type, and uncaught errors."""

    def __init__(self, page: Any) -> None:
        self.messages: list[tuple[str, str]] = []
        self.page_errors: list[str] = []
        page.on("console", lambda m: self.messages.append((m.type, m.text)))
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))

    def errors(self) -> list[str]:
        return [text for kind, text in self.messages if kind == "error"]


class Load:
    """Requests to some aliases from a background thread until stopped."""

    def __init__(self, base_url: str, aliases: list[str]) -> None:
        self.client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0)
        self.aliases = aliases
        self.sent = 0
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="load", daemon=True)

    def _run(self) -> None:
        messages = [{"role": "user", "content": "one two three four"}]
        while not self.stop.is_set():
            for alias in self.aliases:
                try:
                    stream = self.client.chat.completions.create(
                        model=alias, messages=messages, stream=True
                    )
                    for _ in stream:
                        pass
                except openai.APIError as exc:
                    self.failed.append(f"{alias}: {exc}")
                self.sent += 1

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)
        self.client.close()


def figure(page: Any, alias: str, name: str) -> str:
    text = page.text_content(f'[data-alias="{alias}"] [data-field="{name}"]')
    return str(text).strip()


def dashboard_url_from_cli(gateway: Gateway) -> str:
    """What ``byzerllm dashboard --no_browser`` prints for the gateway's /v1 URL."""
    done = subprocess.run(
        [sys.executable, "-m", "byzerllm.cli.main", "dashboard", "--no_browser"]
        + ["--url", gateway.base_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


# JS conditions the page is awaited on (numbers as the page formats them: 1,234 and 1.25)
NUMBER = "(s) => Number(String(s).replace(/,/g, '').split(' ')[0])"
MOVED = f"""([alias, before]) => {{
    const number = {NUMBER};
    const card = document.querySelector(`[data-alias="${{alias}}"]`);
    if (!card) return false;
    const f = (name) => card.querySelector(`[data-field="${{name}}"]`).textContent;
    return number(f("requests_total")) > before && number(f("rps")) > 0
        && f("latency") !== "– / –" && f("first_token") !== "– / –"
        && number(f("tokens_rate").split(" / ")[1]) > 0;
}}"""
ERRORS_SHOWN = f"""([alias, failure]) => {{
    const number = {NUMBER};
    const card = document.querySelector(`[data-alias="${{alias}}"]`);
    if (!card) return false;
    const f = (name) => card.querySelector(`[data-field="${{name}}"]`).textContent;
    return number(f("errors")) > 0 && f("last_error").includes(failure);
}}"""
# pixels of a chart drawn in its first series' colour (--c0), i.e. a plotted line
PLOTTED = """([alias, chart]) => {
    const canvas = document.querySelector(`[data-alias="${alias}"] canvas[data-chart="${chart}"]`);
    const ctx = canvas.getContext("2d");
    const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 0; i < px.length; i += 4) {
        if (px[i + 3] > 128 && px[i + 2] > 150 && px[i] < 120) n++;
    }
    return n;
}"""


@needs_browser
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_page_shows_aliases_and_workers_and_moves_under_load(settings, worker_procs, browser):
    worker_procs.start("echo", "prefix=echo: ", "delay=0.01", concurrency=2)
    worker_procs.start("echo", "prefix=echo: ", "delay=0.01", concurrency=2)
    worker_procs.start("broken", f"fail_with={FAILURE}")
    with Gateway(settings) as gateway:
        url = dashboard_url_from_cli(gateway)
        assert url == gateway.url("/dashboard")
        # the key as a proxy in front of the gateway would add it: the page never sees a 401
        context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {KEY}"})
        page = context.new_page()
        console = Console(page)
        page.goto(url)

        page.wait_for_selector('[data-alias="echo"] .pill >> nth=1')
        page.wait_for_selector('[data-alias="broken"]')
        assert page.locator("main [data-alias]").evaluate_all(
            "cards => cards.map(c => c.dataset.alias)"
        ) == ["broken", "echo"]
        assert figure(page, "echo", "state") == "unmanaged"  # workers started by hand
        assert figure(page, "echo", "backend") == "custom/echo"
        hosts = page.locator('[data-alias="echo"] .node .host').all_text_contents()
        assert hosts == [socket.gethostname()]
        assert page.locator('[data-alias="echo"] .pill').count() == 2
        assert "2 live on 1 node" in figure(page, "echo", "workers_summary")
        before = int(figure(page, "echo", "requests_total").replace(",", ""))

        with Load(gateway.base_url, ["echo", "broken"]) as load:
            page.wait_for_function(MOVED, arg=["echo", before], timeout=90_000)
            page.wait_for_function(ERRORS_SHOWN, arg=["broken", FAILURE], timeout=90_000)
            page.wait_for_function(f"(a) => ({PLOTTED})(a) > 0", arg=["echo", "rps"])
        assert load.sent > 0
        assert all(a.startswith("broken: ") for a in load.failed), load.failed[:3]
        assert figure(page, "echo", "errors").startswith("0")

        # the deploy state is read live, as a node agent changes it
        async def degrade() -> None:
            redis = await connect(settings)
            try:
                await deployments.set_state(redis, Keys(settings.prefix), "echo", "degraded")
            finally:
                await redis.aclose()

        with ThreadPoolExecutor(1) as pool:  # playwright's loop runs in this thread
            pool.submit(asyncio.run, degrade()).result()
        page.wait_for_function(
            '() => document.querySelector(\'[data-alias="echo"] [data-field="state"]\')'
            ".textContent === 'degraded'"
        )
        assert console.page_errors == []
        assert console.errors() == []
        context.close()


@needs_browser
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_page_asks_for_the_key_and_keeps_it_in_the_tab(settings, worker_procs, browser):
    worker_procs.start("echo")
    with Gateway(settings) as gateway:
        context = browser.new_context()
        page = context.new_page()
        console = Console(page)
        page.goto(gateway.url("/dashboard"))

        page.wait_for_selector("#key-form", state="visible")
        assert page.locator("main [data-alias]").count() == 0
        page.fill("#key-input", "sk-wrong")
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#key-error", state="visible")
        assert "incorrect API key" in str(page.text_content("#key-error"))

        page.fill("#key-input", KEY)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector('[data-alias="echo"]')
        assert page.is_hidden("#key-form")
        assert page.evaluate("Object.keys(sessionStorage)") == ["byzerllm.dashboard.key"]
        assert KEY not in page.url and page.evaluate("document.cookie") == ""

        page.reload()  # the same tab keeps the key
        page.wait_for_selector('[data-alias="echo"]')
        page.click("#forget-key")
        page.wait_for_selector("#key-form", state="visible")
        assert page.locator("main [data-alias]").count() == 0

        assert console.page_errors == []
        # the browser itself logs each 401 answer; the page adds nothing
        unauthorized = "Failed to load resource: the server responded with a status of 401"
        assert console.errors() and all(e.startswith(unauthorized) for e in console.errors())
        context.close()


# -- without a browser -------------------------------------------------------------------


async def _api_key(settings: Any, name: str, aliases: list[str]) -> str:
    """A key made as ``byzerllm keys create --aliases ...`` makes it."""
    redis = await connect(settings)
    try:
        key, _ = await ApiKeys(redis, Keys(settings.prefix)).create(name, aliases=aliases)
        return key
    finally:
        await redis.aclose()


def test_the_data_needs_the_key_and_the_page_does_not(settings, worker_procs):
    worker_procs.start("echo", concurrency=3)
    worker_procs.start("other")
    with ThreadPoolExecutor(1) as pool:
        echo_only = pool.submit(asyncio.run, _api_key(settings, "echo-only", ["echo"])).result()
    with Gateway(settings) as gateway, httpx2.Client(timeout=30) as http:
        page = http.get(gateway.url("/dashboard"))
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp
        for asset in ("dashboard/dashboard.js", "dashboard/dashboard.css"):
            assert f'"{asset}"' in page.text
            assert http.get(gateway.url(f"/{asset}")).status_code == 200

        refused = http.get(gateway.url("/dashboard/data"))
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"

        data = http.get(gateway.url("/dashboard/data"), headers={"Authorization": f"Bearer {KEY}"})
        assert data.status_code == 200 and data.headers["cache-control"] == "no-store"
        assert [a["alias"] for a in data.json()["aliases"]] == ["echo", "other"]
        # a key limited to some aliases sees only those
        data = http.get(
            gateway.url("/dashboard/data"), headers={"Authorization": f"Bearer {echo_only}"}
        )
        assert data.status_code == 200
        body = data.json()
        assert isinstance(body["time"], float)
        [echo] = body["aliases"]
        assert echo["alias"] == "echo" and echo["state"] == "unmanaged"
        [node] = echo["nodes"]
        assert node["host"] == socket.gethostname()
        assert (node["busy"], node["idle"]) == (0, 1)
        [worker] = node["workers"]
        assert worker["ready"] and worker["max_concurrency"] == 3 and worker["busy_slots"] == 0
        metrics = echo["metrics"]
        assert metrics["live_workers"] == 1 and metrics["queue_depth"] == 0
        assert len(metrics["latency"]["counts"]) == len(metrics["latency"]["bounds"]) + 1


def test_the_assets_ship_in_the_package_and_fetch_nothing_from_elsewhere():
    static = resources.files("byzerllm.client.gateway") / "static"
    for name in ("dashboard.html", "dashboard.js", "dashboard.css"):
        text = (static / name).read_text("utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
        assert "@import" not in text and "url(" not in text, name
    # that a built wheel carries them: tests/test_package.py


def test_the_command_prints_the_page_and_opens_the_browser(tmp_path):
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {opened}\n')
    browser.chmod(0o755)
    env = {**os.environ, "BROWSER": str(browser)}
    command = [sys.executable, "-m", "byzerllm.cli.main", "dashboard"]
    done = subprocess.run(
        [*command, "--url", "http://gw.example:8000/v1/"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "http://gw.example:8000/dashboard"
    assert opened.read_text() == "http://gw.example:8000/dashboard"

    bad = subprocess.run(
        [*command, "--no_browser", "--url", "gw.example:8000"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "'gw.example:8000' is not a gateway address" in bad.stderr
    assert "http://127.0.0.1:8000" in bad.stderr
    secret = subprocess.run(
        [*command, "--no_browser", "--url", "http://admin:hunter2@gw.example:8000"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert secret.returncode == 2 and "hunter2" not in secret.stderr + secret.stdout
    assert "leave credentials out" in secret.stderr
