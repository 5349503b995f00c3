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
    "grip_origin_listen",
    "grip_proxy_url",
    "grip_publish_url",
    "grip_sig_key",
    "pytest_addoption",
    "pytest_configure",
]

_OPTIONS = (
    ("grip_proxy", "--grip-proxy", "URL of a running GRIP proxy's client side (http://HOST:PORT)"),
    ("grip_publish", "--grip-publish", "URL of the same proxy's publish API (http://HOST:PORT)"),
)


DEFAULT_ORIGIN_LISTEN = "127.0.0.1:9191"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add `--grip-proxy`, `--grip-publish`, `--grip-origin-listen` and `--grip-sig-key`."""
    group = parser.getgroup("gripcore", "GRIP conformance checks (gripcore.testing)")
    for dest, flag, help_text in _OPTIONS:
        group.addoption(flag, dest=dest, metavar="URL", default=None, help=help_text)
    group.addoption(
        "--grip-origin-listen",
        dest="grip_origin_listen",
        metavar="HOST:PORT",
        default=DEFAULT_ORIGIN_LISTEN,
        help="where the proxy checks run their own origin; route the proxy there "
        f"(default {DEFAULT_ORIGIN_LISTEN})",
    )
    group.addoption(
        "--grip-sig-key",
        dest="grip_sig_key",
        metavar="KEY",
        default=None,
        help="the proxy's Grip-Sig key, to validate its signatures (otherwise only presence)",
    )


def _check_url(flag: str, value: str) -> None:
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        raise pytest.UsageError(f"{flag}: {value!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise pytest.UsageError(f"{flag}: {value!r} must be an absolute http:// or https:// URL")


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise pytest.UsageError(f"--grip-origin-listen: {value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def pytest_configure(config: pytest.Config) -> None:
    """Reject malformed URLs up front (`pytest.UsageError`), not in every test that uses them."""
    for dest, flag, _ in _OPTIONS:
        value = config.getoption(dest)
        if value is not None:
            _check_url(flag, value)
    _host_port(config.getoption("grip_origin_listen"))


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


@pytest.fixture(scope="session")
def grip_origin_listen(request: pytest.FixtureRequest) -> tuple[str, int]:
    """(host, port) where the proxy checks run their origin (`--grip-origin-listen`)."""
    return _host_port(request.config.getoption("grip_origin_listen"))


@pytest.fixture(scope="session")
def grip_sig_key(request: pytest.FixtureRequest) -> str | None:
    """The `--grip-sig-key` value, or None."""
    value: str | None = request.config.getoption("grip_sig_key")
    return value
