"""The starter kit in a real headless Chromium: four transports, two publishes, every panel read.

`gripcore serve` with no routes serves the embedded starter kit (`gripcore._starter`); its page
opens Server-Sent Events, HTTP streaming, long-polling and a WebSocket on channel `test`. This
test starts the proxy in process (tests/e2e_support.py), opens the page in Debian's Chromium
through the system ChromeDriver (selenium), waits for all four badges to say "open", then:

1. publishes through the publish API one item carrying all three formats, exactly as the
   `gripcore serve` banner's curl command does, and reads the text from each panel;
2. publishes through the page's own form (`POST /test/publish`) and reads it from each panel;
3. sends a message with the WebSocket panel's form and reads the origin's echo in that panel.

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
# The page's grid puts the four panels 2x2 at this width (3+1 at 1280); the height leaves a
# viewport (window minus about 140 px of browser frame) that shows every panel whole.
WINDOW_SIZE = (1024, 950)

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


def shown_text(panel: str, text: str) -> str:
    """What a panel shows for a published text.

    The HTTP streaming panel shows each chunk as received (trimmed), so the SSE framing of the
    `http-stream` format stays visible; the other panels show the message itself.
    """
    return f"data: {text}" if panel == "stream" else text


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


def page_state(driver: WebDriver, proxy: ProxyThread) -> str:
    """Everything worth seeing when a wait times out."""
    log = driver.get_log("browser")  # type: ignore[no-untyped-call]  # untyped in selenium
    console = [entry.get("message") for entry in log]
    return (
        f"badges={badges(driver)} messages={messages(driver)} "
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


def wait_for_subscribers(driver: WebDriver, proxy: ProxyThread) -> None:
    """Wait until the proxy holds the page's four subscriptions, so a publish cannot race one."""
    until(
        driver,
        proxy,
        f"{SUBSCRIBERS} subscribers on {CHANNEL!r}",
        lambda _: subscribers(proxy, CHANNEL) == SUBSCRIBERS,
    )


def test_starter_kit_page_receives_publishes_on_all_four_transports(
    proxy: ProxyThread, browser: WebDriver
) -> None:
    browser.get(f"http://127.0.0.1:{proxy.port}/")
    assert browser.title == "gripcore starter kit"
    until(browser, proxy, "all four badges open", lambda d: set(badges(d).values()) == {"open"})
    wait_for_subscribers(browser, proxy)
    # Before any publish only the plain stream shows something: its initial body.
    assert messages(browser) == {
        "sse": [],
        "stream": [f"[stream open on channel {CHANNEL}]"],
        "longpoll": [],
        "websocket": [],
    }

    # 1. The publish API, retried with a fresh text until every panel shows one: a long-poll
    # between two requests, or a subscription still settling, misses a publish.
    published: list[str] = []
    deadline = time.monotonic() + WAIT_SECONDS
    while not all(
        len(shown) > int(panel == "stream") for panel, shown in messages(browser).items()
    ):
        if time.monotonic() > deadline:
            pytest.fail(f"API publishes {published} not shown: {page_state(browser, proxy)}")
        text = f"from the publish API #{len(published) + 1}"
        assert publish(proxy.publish_port, [api_item(text)]) == (200, b"Published\n")
        published.append(text)
        with contextlib.suppress(TimeoutException):
            WebDriverWait(browser, PUBLISH_RETRY_SECONDS, poll_frequency=0.05).until(
                lambda d: all(len(shown) > int(p == "stream") for p, shown in messages(d).items())
            )
    for panel, shown in messages(browser).items():
        expected = {shown_text(panel, text) for text in published}
        # The stream panel shows one read per line: two chunks can arrive in one read.
        new = (
            [chunk for li in shown[1:] for chunk in li.split("\n\n")]
            if panel == "stream"
            else shown
        )
        assert new and set(new) <= expected, (panel, shown, published)

    # 2. The page's own form: POST /test/publish, which the proxy publishes in process.
    wait_for_subscribers(browser, proxy)  # the long-poll has polled again
    form_text = "h\u00e9llo from the page's form"  # non-ASCII: UTF-8 through every format
    field = browser.find_element(By.ID, "publish-text")
    field.send_keys(form_text)
    assert browser.find_element(By.ID, "publish-channel").get_attribute("value") == CHANNEL
    browser.find_element(By.ID, "publish-button").click()
    until(
        browser,
        proxy,
        "the form's 'published' status",
        lambda d: d.find_element(By.ID, "publish-status").text == "published",
    )
    until(
        browser,
        proxy,
        f"{form_text!r} in every panel",
        lambda d: all(shown[-1:] == [shown_text(p, form_text)] for p, shown in messages(d).items()),
    )
    assert field.get_attribute("value") == ""  # the form clears after a publish
    assert set(badges(browser).values()) == {"open"}

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
