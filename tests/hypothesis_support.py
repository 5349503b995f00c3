"""How many examples a property test runs: its own number in `make test` (derandomized, so CI
passes or fails the same way every time), that number times GRIPCORE_FUZZ_FACTOR (default 20)
under `make fuzz` (HYPOTHESIS_PROFILE=fuzz: random, for finding what the fixed seed misses).

A failing example `make fuzz` finds is kept as an explicit `@example` on its test."""

from __future__ import annotations

import os

FUZZ = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
FUZZ_FACTOR = int(os.environ.get("GRIPCORE_FUZZ_FACTOR", "20"))


def examples(n: int) -> int:
    """`n` examples, or `n * FUZZ_FACTOR` under the fuzz profile."""
    return n * FUZZ_FACTOR if FUZZ else n
