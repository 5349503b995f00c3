"""The core stays sans-IO: no module under src/gripcore imports I/O, threads, the clock or
global randomness (time and randomness come in as arguments)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import gripcore

FORBIDDEN = {"socket", "asyncio", "gevent", "selectors", "threading", "time", "random"}
CORE = Path(gripcore.__file__).parent


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_modules_exist() -> None:
    assert len(list(CORE.glob("*.py"))) >= 4


def test_no_io_imports_in_core() -> None:
    offenders = {
        path.name: sorted(_imported_roots(path) & FORBIDDEN)
        for path in sorted(CORE.glob("*.py"))
        if _imported_roots(path) & FORBIDDEN
    }
    assert offenders == {}


def test_no_io_imports_in_compiled_source() -> None:
    source = (CORE / "_fast.pyx").read_text(encoding="utf-8")
    for name in FORBIDDEN:
        assert f"import {name}" not in source
        assert f"from {name} " not in source


def test_detector_catches_forbidden_imports(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom asyncio import sleep\nimport os.path\n", encoding="utf-8")
    assert _imported_roots(bad) & FORBIDDEN == {"time", "asyncio"}


def test_import_gripcore_loads_no_driver() -> None:
    """`import gripcore` stays sans-IO at run time too: the publishers it re-exports
    (`gripcore.Publisher`, ...) live in the drivers, which load only when first used."""
    probe = (
        "import sys, gripcore\n"
        "print(sorted(m for m in sys.modules if m.startswith(('gripcore.adapters', 'asyncio',"
        " 'gevent', 'h11'))))\n"
        "from gripcore import Publisher, AsyncPublisher\n"
        "print(Publisher.__module__, AsyncPublisher.__module__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.splitlines() == [
        "[]",
        "gripcore.adapters.publisher gripcore.adapters.asyncio.publisher",
    ]
