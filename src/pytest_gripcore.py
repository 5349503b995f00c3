"""pytest plugin: command-line options and fixtures that point checks at a running GRIP server.

Registered through the `pytest11` entry point `gripcore = "pytest_gripcore"`, so it is
active in any pytest run once gripcore is installed (or explicitly: `pytest -p
gripcore.testing.plugin`). It adds:

* `--grip-proxy URL`: the client side of a running GRIP proxy (gripcore, Pushpin, Fanout...);
* `--grip-publish URL`: its publish API (`http://HOST:5561`; a bare host means `/publish/`);
* fixtures `grip_proxy_url` and `grip_publish_url` (session scope) returning those URLs without a
  trailing slash, and skipping the test when the option was not given, so a suite with black-box
  checks still passes where no server runs.

The checks that use them live in `gripcore.testing.checks` (`pytest --pyargs
gripcore.testing.checks --grip-publish=http://127.0.0.1:5561`). A URL that is not absolute
`http`/`https` is a usage error reported before any test runs.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

__all__ = [
    "grip_proxy_url",
    "grip_publish_url",
    "pytest_addoption",
    "pytest_configure",
]

_OPTIONS = (
    ("grip_proxy", "--grip-proxy", "URL of a running GRIP proxy's client side (http://HOST:PORT)"),
    ("grip_publish", "--grip-publish", "URL of the same proxy's publish API (http://HOST:PORT)"),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add `--grip-proxy` and `--grip-publish` to pytest's command line."""
    group = parser.getgroup("gripcore", "GRIP conformance checks (gripcore.testing)")
    for dest, flag, help_text in _OPTIONS:
        group.addoption(flag, dest=dest, metavar="URL", default=None, help=help_text)


def _check_url(flag: str, value: str) -> None:
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        raise pytest.UsageError(f"{flag}: {value!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise pytest.UsageError(f"{flag}: {value!r} must be an absolute http:// or https:// URL")


def pytest_configure(config: pytest.Config) -> None:
    """Reject malformed URLs up front (`pytest.UsageError`), not in every test that uses them."""
    for dest, flag, _ in _OPTIONS:
        value = config.getoption(dest)
        if value is not None:
            _check_url(flag, value)


def _url(request: pytest.FixtureRequest, dest: str, flag: str) -> str:
    value: str | None = request.config.getoption(dest)
    if not value:
        pytest.skip(f"no GRIP server given: pass {flag}=URL to run this check")
    return value.rstrip("/")


@pytest.fixture(scope="session")
def grip_proxy_url(request: pytest.FixtureRequest) -> str:
    """The `--grip-proxy` URL without a trailing slash; skips the test when it was not given."""
    return _url(request, "grip_proxy", "--grip-proxy")


@pytest.fixture(scope="session")
def grip_publish_url(request: pytest.FixtureRequest) -> str:
    """The `--grip-publish` URL without a trailing slash; skips the test when it was not given."""
    return _url(request, "grip_publish", "--grip-publish")
