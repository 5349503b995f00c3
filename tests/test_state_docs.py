"""docs/state-machines.md is generated from the transition tables and must match them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "state_diagrams.py"


def test_state_machine_docs_match_the_tables() -> None:
    spec = importlib.util.spec_from_file_location("state_diagrams", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered = module.render()
    assert "stateDiagram-v2" in rendered
    assert module.OUT.read_text(encoding="utf-8") == rendered, (
        "docs/state-machines.md is stale: run python tools/state_diagrams.py"
    )
