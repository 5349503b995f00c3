"""The starter kit in a real headless Chromium: four transports, two publishes, every panel read.

`gripcore serve` with no routes serves the embedded starter kit (`gripcore._starter`); its page
opens Server-Sent Events, HTTP streaming, long-polling and a WebSocket on channel `test`. This
test starts the proxy in process (tests/e2e_support.py), opens the page in Debian's Chromium
through the system ChromeDriver (selenium), waits for all four badges to say "open", then:

1. publishes through the publish API one item carrying all three formats, exactly as the
   `gripcore serve` banner's curl command does, and reads the text from each panel;
2. publishes through the page's own form (`POST /test/publish`) and reads it from each panel;
3. sends a message with the WebSocket panel's form and reads the origin's echo in that panel.

Every panel, the HTTP streaming one included (it parses the stream as Server-Sent Events),
shows each published text as one message. Two more tests: the form's channel field reopens
the page on `?channel=NAME` (panels and form on one channel), and the streaming panel's SSE
parser, run in the page, against a table of streams fed whole, by character and split.

Before each publish the test waits (bounded) until the proxy holds four subscribers on the
channel, so the publish does not race a subscription; a long-poll re-polls after each message,
so the API publish is still retried with a fresh text until every panel shows one.

With `GRIPCORE_SCREENSHOT=1` the test saves the page after step 2 to docs/starter-kit.png
(ordinary runs leave the repository alone). Skipped, with the reason, when Chromium,
ChromeDriver or selenium is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .e2e_support import ProxyThread, publish, running_proxy, subscribers

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHANNEL = "test"
PANELS = ("sse", "stream", "longpoll", "websocket")
# SSE, the plain stream, the held long-poll request and the WebSocket.
SUBSCRIBERS = len(PANELS)
# Bounds for every wait: the whole test must stay well under 30 s even when it fails.
WAIT_SECONDS = 10.0
PUBLISH_RETRY_SECONDS = 0.5
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "starter-kit.png"
# The page's grid puts the four panels 2x2 from 900 px wide (one column below); the height
# leaves a viewport (window minus about 140 px of browser frame) that shows every panel whole.
WINDOW_SIZE = (1024, 980)

# Without the networking flags Chromium phones home at start and the closed network refuses it.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} not installed (Debian packages chromium and chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install selenium)"
    return None


MISSING = _missing()
if MISSING is not None:
    pytest.skip(MISSING, allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def api_item(text: str) -> dict[str, Any]:
    """The item the `gripcore serve` banner publishes: all three formats, one text."""
    return {
        "channel": CHANNEL,
        "formats": {
            "http-stream": {"content": f"data: {text}\n\n"},
            "ws-message": {"content": text},
            "http-response": {"body": json.dumps({"messages": [text]}) + "\n"},
        },
    }


@pytest.fixture
def proxy() -> Iterator[ProxyThread]:
    with running_proxy() as server:  # no routes: the starter kit
        yield server


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    with tempfile.TemporaryDirectory(prefix="gripcore-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument("--window-size={},{}".format(*WINDOW_SIZE))
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console, on failure
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            driver.set_page_load_timeout(WAIT_SECONDS)
            yield driver
        finally:
            driver.quit()


def badges(driver: WebDriver) -> dict[str, str | None]:
    """Each panel's status badge (`data-state`: connecting, open or error)."""
    return {
        panel: driver.find_element(By.CSS_SELECTOR, f"#panel-{panel} .badge").get_attribute(
            "data-state"
        )
        for panel in PANELS
    }


def messages(driver: WebDriver) -> dict[str, list[str]]:
    """The text of each message (`li .text`) in each panel, oldest first."""
    return {
        panel: [
            element.text
            for element in driver.find_elements(
                By.CSS_SELECTOR, f"#panel-{panel} .messages li .text"
            )
        ]
        for panel in PANELS
    }


def stream_status(driver: WebDriver) -> str:
    """The HTTP streaming panel's status line (where the stream's non-SSE lines go)."""
    return driver.find_element(By.CSS_SELECTOR, "#panel-stream .stream-status").text


def publish_status(driver: WebDriver) -> str:
    return driver.find_element(By.ID, "publish-status").text


def page_state(driver: WebDriver, proxy: ProxyThread) -> str:
    """Everything worth seeing when a wait times out."""
    log = driver.get_log("browser")  # type: ignore[no-untyped-call]  # untyped in selenium
    console = [entry.get("message") for entry in log]
    return (
        f"url={driver.current_url} badges={badges(driver)} messages={messages(driver)} "
        f"stream_status={stream_status(driver)!r} publish_status={publish_status(driver)!r} "
        f"subscribers={subscribers(proxy, CHANNEL)} console={console}"
    )


def until(
    driver: WebDriver,
    proxy: ProxyThread,
    what: str,
    condition: Callable[[WebDriver], bool],
    timeout: float = WAIT_SECONDS,
) -> None:
    """Poll `condition` (bounded); on timeout fail saying what was awaited and the page state."""
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
    except TimeoutException:
        pytest.fail(f"{what} not within {timeout} s: {page_state(driver, proxy)}")


def wait_for_subscribers(driver: WebDriver, proxy: ProxyThread, channel: str = CHANNEL) -> None:
    """Wait until the proxy holds the page's four subscriptions, so a publish cannot race one."""
    until(
        driver,
        proxy,
        f"{SUBSCRIBERS} subscribers on {channel!r}",
        lambda _: subscribers(proxy, channel) == SUBSCRIBERS,
    )


def open_page(driver: WebDriver, proxy: ProxyThread) -> None:
    """Load the page and wait until every panel is open and subscribed."""
    driver.get(f"http://127.0.0.1:{proxy.port}/")
    assert driver.title == "gripcore starter kit"
    until(driver, proxy, "all four badges open", lambda d: set(badges(d).values()) == {"open"})
    wait_for_subscribers(driver, proxy)


def publish_with_form(driver: WebDriver, proxy: ProxyThread, text: str) -> None:
    """Type `text` into the page's form, click Publish and wait for the 'published' status."""
    field = driver.find_element(By.ID, "publish-text")
    field.send_keys(text)
    driver.find_element(By.ID, "publish-button").click()
    until(
        driver, proxy, "the form's 'published' status", lambda d: publish_status(d) == "published"
    )
    assert field.get_attribute("value") == ""  # the form clears after a publish


def test_starter_kit_page_receives_publishes_on_all_four_transports(
    proxy: ProxyThread, browser: WebDriver
) -> None:
    open_page(browser, proxy)
    # Before any publish no panel shows a message; the plain stream's initial body is its
    # status line.
    assert messages(browser) == {panel: [] for panel in PANELS}
    assert stream_status(browser) == f"[stream open on channel {CHANNEL}]"

    # 1. The publish API, retried with a fresh text until every panel shows one: a long-poll
    # between two requests, or a subscription still settling, misses a publish.
    published: list[str] = []
    deadline = time.monotonic() + WAIT_SECONDS
    while not all(messages(browser).values()):
        if time.monotonic() > deadline:
            pytest.fail(f"API publishes {published} not shown: {page_state(browser, proxy)}")
        text = f"from the publish API #{len(published) + 1}"
        assert publish(proxy.publish_port, [api_item(text)]) == (200, b"Published\n")
        published.append(text)
        with contextlib.suppress(TimeoutException):
            WebDriverWait(browser, PUBLISH_RETRY_SECONDS, poll_frequency=0.05).until(
                lambda d: all(messages(d).values())
            )
    for panel, shown in messages(browser).items():
        # Each publish is one message, even when the stream's reads merge or split events.
        assert shown and set(shown) <= set(published), (panel, shown, published)
        assert len(shown) == len(set(shown)), (panel, shown)

    # 2. The page's own form: POST /test/publish, which the proxy publishes in process.
    wait_for_subscribers(browser, proxy)  # the long-poll has polled again
    form_text = "h\u00e9llo from the page's form"  # non-ASCII: UTF-8 through every format
    assert browser.find_element(By.ID, "publish-channel").get_attribute("value") == CHANNEL
    publish_with_form(browser, proxy, form_text)
    until(
        browser,
        proxy,
        f"{form_text!r} in every panel",
        lambda d: all(shown[-1:] == [form_text] for shown in messages(d).values()),
    )
    assert set(badges(browser).values()) == {"open"}

    # 2b. Three form publishes back to back: the second and third land while the long-poll is
    # between two requests; its next polls name the last id shown and get them from the
    # history, so every panel shows all three, in order (issue 14: the long-poll panel missed them).
    burst = [f"burst {n}" for n in (1, 2, 3)]
    wait_for_subscribers(browser, proxy)
    browser.execute_async_script(
        """const [texts, channel, done] = arguments;
        (async () => {
          for (const text of texts) {
            await fetch("/test/publish", {method: "POST", body: JSON.stringify({channel, text})});
          }
        })().then(done, done);""",
        burst,
        CHANNEL,
    )
    until(
        browser,
        proxy,
        f"{burst} in every panel",
        lambda d: all(shown[-3:] == burst for shown in messages(d).values()),
    )

    if os.environ.get("GRIPCORE_SCREENSHOT") == "1":
        assert browser.save_screenshot(str(SCREENSHOT)), SCREENSHOT

    # 3. The WebSocket panel's own form: the starter origin echoes the message to that socket only.
    before = messages(browser)
    browser.find_element(By.ID, "ws-text").send_keys("echo over the WebSocket")
    browser.find_element(By.ID, "ws-send").click()
    until(
        browser,
        proxy,
        "the WebSocket echo",
        lambda d: messages(d)["websocket"] == [*before["websocket"], "echo over the WebSocket"],
    )
    assert messages(browser) == {
        **before,
        "websocket": [*before["websocket"], "echo over the WebSocket"],
    }

    # The 'published' status does not linger (3 s), and nothing failed in the console (the
    # favicon is inline, so not even a 404).
    until(browser, proxy, "the 'published' status cleared", lambda d: publish_status(d) == "")
    log = browser.get_log("browser")  # type: ignore[no-untyped-call]  # untyped in selenium
    assert [entry for entry in log if entry.get("level") == "SEVERE"] == []


OTHER_CHANNEL = "room-2"


def test_channel_field_is_the_page_channel(proxy: ProxyThread, browser: WebDriver) -> None:
    """The form's channel field reopens the page on ?channel=NAME: panels and form agree."""
    open_page(browser, proxy)
    base = f"http://127.0.0.1:{proxy.port}/"
    field = browser.find_element(By.ID, "publish-channel")
    field.clear()
    field.send_keys("no spaces", Keys.ENTER)
    until(
        browser,
        proxy,
        "the invalid-channel error",
        lambda d: publish_status(d).startswith('error: invalid channel "no spaces"'),
    )
    assert browser.current_url == base  # an invalid name does not leave the page

    field.clear()
    field.send_keys(OTHER_CHANNEL, Keys.ENTER)
    until(
        browser,
        proxy,
        f"the page on ?channel={OTHER_CHANNEL}",
        lambda d: d.current_url == f"{base}?channel={OTHER_CHANNEL}",
    )
    until(browser, proxy, "all four badges open", lambda d: set(badges(d).values()) == {"open"})
    wait_for_subscribers(browser, proxy, OTHER_CHANNEL)
    # The left page closed its connections (else Chromium's six per host would stall the form).
    until(
        browser,
        proxy,
        f"no subscribers left on {CHANNEL!r}",
        lambda _: subscribers(proxy, CHANNEL) == 0,
    )
    assert browser.find_element(By.ID, "channel-name").text == OTHER_CHANNEL
    assert browser.find_element(By.ID, "publish-channel").get_attribute("value") == OTHER_CHANNEL
    assert stream_status(browser) == f"[stream open on channel {OTHER_CHANNEL}]"
    publish_with_form(browser, proxy, "on the other channel")
    until(
        browser,
        proxy,
        "the form's publish in every panel",
        lambda d: all(shown == ["on the other channel"] for shown in messages(d).values()),
    )


# The HTTP streaming panel's parser: (stream text, messages, status lines).
SSE_VECTORS: list[tuple[str, list[str], list[str]]] = [
    (
        "[stream open on channel test]\ndata: hello\n\n",
        ["hello"],
        ["[stream open on channel test]"],
    ),
    ("data: a\n\ndata: b\n\n", ["a", "b"], []),
    ("data: a\ndata: b\n\n", ["a\nb"], []),
    ("data: a\ndata: \n\n", ["a\n"], []),
    ("data: x\r\n\r\n", ["x"], []),
    ("\ndata: a\n\n\n\n:\n\n: comment\n\ndata: b\n\n", ["a", "b"], []),  # keep-alives
    ("id: 1\nevent: e\nretry: 5\ndata:no-space\n\n", ["no-space"], []),
    ("data:  two\n\ndata\n\n", [" two", ""], []),
    ("data: caf\u00e9 \u2603\n\n", ["caf\u00e9 \u2603"], []),
    ("data: a\n\ndata: unfinished", ["a"], []),
    ("data: a\n\ndata: unfinished\n", ["a"], []),
    ("plain text\n", [], ["plain text"]),
    ("", [], []),
]

PARSE = """
const chunks = arguments[0];
const out = { messages: [], lines: [] };
const parser = sseParser((data) => out.messages.push(data), (line) => out.lines.push(line));
for (const chunk of chunks) parser.push(chunk);
return out;
"""


def test_stream_panel_parses_server_sent_events(proxy: ProxyThread, browser: WebDriver) -> None:
    """The page's SSE parser, fed whole, one character at a time and split at every point."""
    browser.get(f"http://127.0.0.1:{proxy.port}/")
    for text, expected_messages, expected_lines in SSE_VECTORS:
        expected = {"messages": expected_messages, "lines": expected_lines}
        feeds = [[text], list(text)] + [[text[:i], text[i:]] for i in range(1, len(text))]
        for chunks in feeds:
            assert browser.execute_script(PARSE, chunks) == expected, (text, chunks)

    # About 1 MB in 1,000-character reads: every event whole, in order, and a runaway event
    # (over the page's 1,000,000-character bound) dropped with a status line, not kept.
    big = browser.execute_script(
        """
        const event = (i) => "data: " + String(i).padStart(500, "0") + "\\n\\n";
        let text = "";
        for (let i = 0; i < 2000; i++) text += event(i);
        text += "data: " + "x".repeat(1000001) + "\\n\\ndata: after\\n\\n";
        const out = { messages: [], lines: [] };
        const parser = sseParser((d) => out.messages.push(d), (l) => out.lines.push(l));
        for (let i = 0; i < text.length; i += 1000) parser.push(text.slice(i, i + 1000));
        return { count: out.messages.length, first: out.messages[0],
                 last: out.messages.slice(-2), lines: out.lines };
        """
    )
    assert big == {
        "count": 2001,
        "first": "0" * 500,
        "last": ["1999".rjust(500, "0"), "after"],
        "lines": ["[an event over 1000000 characters was dropped]"],
    }
