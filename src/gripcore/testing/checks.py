"""Black-box checks of a running GRIP server's publish API, as pytest tests.

Run them against any server (gripcore, Pushpin, Fastly Fanout's API shape)::

    pytest --pyargs gripcore.testing.checks --grip-publish=http://127.0.0.1:5561

or import them into a test module of your own (`from gripcore.testing.checks import *`). Each
test takes the `grip_publish_url` fixture of `gripcore.testing.plugin`, so it is skipped when no
URL was given. With `--grip-proxy` too, the proxy-side checks of `gripcore check proxy` (streams,
long-polls, WebSocket-over-HTTP, actions, dedup, ordering, Grip-Sig...) run as one test each; they
start their own origin at `--grip-origin-listen` (default 127.0.0.1:9191), where the proxy under
test must route.

Only behaviour every GRIP server shares is checked: generated valid batches (without the
`refresh` action, which Pushpin 1.36 lacks, and without null members, which it rejects) are answered 200, and batches that Pushpin and
gripcore both reject are answered 400. Limits where servers differ
(gripcore's 32,767-byte content limit is Fanout's, Pushpin has none) are not checked here.

This module does network I/O through `urllib`; it is a test tool, not part of the sans-IO core.
"""

from __future__ import annotations

import importlib
import json
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from .._check import PROXY_CHECKS, CheckResult, format_result
from .._items import Action
from .strategies import publish_bodies

__all__ = [
    "CHECK_TIMEOUT",
    "PORTABLE_ACTIONS",
    "REJECTED_PUBLISH_BODIES",
    "proxy_check_results",
    "publish",
    "test_proxy_check",
    "test_publish_accepts_generated_batches",
    "test_publish_rejects_invalid_batches",
]

# Seconds one request may take: a loopback publish answers in milliseconds, so ten seconds only
# ever expires on a hung server.
CHECK_TIMEOUT = 10.0

# Actions every server knows: `refresh` arrived in Pushpin 1.37 (1.36 answers it with 400).
PORTABLE_ACTIONS: tuple[Action, ...] = ("send", "hint", "close")

# Batches Pushpin and gripcore both answer with 400, each with why.
REJECTED_PUBLISH_BODIES = [
    pytest.param(b"not json", id="body-not-json"),
    pytest.param(b'["items"]', id="body-not-an-object"),
    pytest.param(b'{"item": []}', id="no-items-member"),
    pytest.param(b'{"items": {}}', id="items-not-a-list"),
    pytest.param(json.dumps({"items": [{"channel": "c"}]}).encode(), id="no-formats"),
    pytest.param(
        json.dumps({"items": [{"http-stream": {"content": "x"}}]}).encode(), id="no-channel"
    ),
    pytest.param(
        json.dumps({"items": [{"channel": "c", "http-stream": {"action": "bogus"}}]}).encode(),
        id="unknown-action",
    ),
]


def _publish_endpoint(url: str) -> str:
    """`url` itself when it names a path, else its `/publish/` path."""
    return url if urlsplit(url).path.strip("/") else url.rstrip("/") + "/publish/"


def publish(url: str, body: bytes) -> tuple[int, bytes]:
    """POST `body` as JSON to the publish API at `url`; returns (status, response body)."""
    request = urllib.request.Request(
        _publish_endpoint(url),
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=CHECK_TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


# Each example is a network round trip: no deadline, and no shrinking (a failing batch is
# reported as generated; shrinking it would cost hundreds of requests to a broken server).
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(case=publish_bodies(actions=PORTABLE_ACTIONS, nulls=False))
def test_publish_accepts_generated_batches(
    grip_publish_url: str, case: tuple[bytes, list[object]]
) -> None:
    """A valid batch (both item shapes, every format and action) is published: 200."""
    body, _ = case
    status, answer = publish(grip_publish_url, body)
    assert status == 200, f"valid batch answered {status} {answer!r}: {body!r}"


@pytest.mark.parametrize("body", REJECTED_PUBLISH_BODIES)
def test_publish_rejects_invalid_batches(grip_publish_url: str, body: bytes) -> None:
    """An invalid batch is rejected whole with 400, and nothing is published."""
    status, answer = publish(grip_publish_url, body)
    assert status == 400, f"invalid batch answered {status} {answer!r}: {body!r}"


@pytest.fixture(scope="session")
def proxy_check_results(
    grip_proxy_url: str,
    grip_publish_url: str,
    grip_origin_listen: tuple[str, int],
    grip_sig_key: str | None,
) -> dict[str, CheckResult]:
    """Every proxy check of `gripcore check proxy`, run once, by name."""
    # the checker is I/O (an adapter): imported by name, as the CLI does
    checker = importlib.import_module("gripcore.adapters.checker")
    with checker.CheckerOriginServer(grip_origin_listen) as origin:
        results: list[CheckResult] = checker.run_proxy_checks(
            grip_proxy_url, grip_publish_url, origin, sig_key=grip_sig_key
        )
    return {result.name: result for result in results}


@pytest.mark.parametrize("name", [spec.name for spec in PROXY_CHECKS])
def test_proxy_check(name: str, proxy_check_results: dict[str, CheckResult]) -> None:
    """One of `gripcore check proxy`'s checks against the proxy under test."""
    result = proxy_check_results[name]
    assert result.passed, format_result(result)
