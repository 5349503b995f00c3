"""The pytest plugin lives in the top-level module `pytest_gripcore` (registered through the
`pytest11` entry point), so that pytest can load it without importing gripcore before coverage
measurement starts. This name stays for `pytest -p gripcore.testing.plugin`."""

from __future__ import annotations

from pytest_gripcore import (
    grip_origin_listen,
    grip_proxy_url,
    grip_publish_url,
    grip_sig_key,
    pytest_addoption,
    pytest_configure,
)

__all__ = [
    "grip_origin_listen",
    "grip_proxy_url",
    "grip_publish_url",
    "grip_sig_key",
    "pytest_addoption",
    "pytest_configure",
]
