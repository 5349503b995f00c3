"""Shared fixtures: the hot-path implementations (compiled and pure) and hypothesis profiles."""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import ModuleType

import pytest
from hypothesis import HealthCheck, settings

from gripcore import _fast_py, _speedups

from .hypothesis_support import examples

# `make test` (and CI) runs every property derandomized: the same examples on every run, so a
# test passes or fails by the code, not by luck. `make fuzz` (HYPOTHESIS_PROFILE=fuzz) runs them
# randomly with GRIPCORE_FUZZ_FACTOR times the examples (tests/hypothesis_support.py); keep what
# it finds as an explicit @example on the test.
settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=examples(100),
    derandomize=True,
    print_blob=True,
)
settings.register_profile("ci", parent=settings.get_profile("default"))
settings.register_profile(
    "fuzz", parent=settings.get_profile("default"), derandomize=False, max_examples=examples(100)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "default")


def _implementations() -> list[ModuleType]:
    impls: list[ModuleType] = [_fast_py]
    try:
        from gripcore import _fast  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        if os.environ.get("GRIPCORE_REQUIRE_EXTENSIONS") == "1":
            raise
    else:
        impls.append(_fast)
    return impls


IMPLEMENTATIONS = _implementations()


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def fast(request: pytest.FixtureRequest) -> ModuleType:
    """Each hot-path implementation in turn: the pure twin, then the compiled one if built."""
    impl: ModuleType = request.param
    return impl


@pytest.fixture(autouse=True)
def _close_test_clients() -> Iterator[None]:
    """Close every raw client socket a test opened (tests/e2e_support.py)."""
    from .e2e_support import OPEN_CLIENTS

    yield
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()


# Both adapters in the compiled leg; the pure-twin leg (GRIPCORE_NO_EXTENSIONS=1) re-runs the
# end-to-end suites for the core's pure twin, which the adapter choice does not change: asyncio
# only there, to keep `make test` short.
ADAPTERS = ["asyncio"] if os.environ.get("GRIPCORE_NO_EXTENSIONS") == "1" else ["asyncio", "gevent"]


@pytest.fixture(scope="module", params=ADAPTERS)
def proxy_adapter(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test once per adapter: `running_proxy` starts that one (tests/e2e_support.py)."""
    from . import e2e_support

    e2e_support.ADAPTER = request.param
    try:
        yield request.param
    finally:
        e2e_support.ADAPTER = "asyncio"


__all__ = ["IMPLEMENTATIONS", "_speedups"]
