"""Building gripcore where no C compiler works: setup.py falls back to the pure twin with a warning,
unless GRIPCORE_REQUIRE_EXTENSIONS=1 makes that an error.

Each test copies the source tree to a temporary directory and runs a real `pip wheel` there with
`CC=false` (a "compiler" that always fails), without build isolation so that the project virtual
environment's setuptools and Cython are used and nothing is downloaded. The wheel built is then
imported on its own (its directory first on the path) to show that it works and which hot path is
live. `make dist-check` covers the normal build, the sdist and the installed `gripcore serve`.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

_NOT_SOURCE = shutil.ignore_patterns(
    ".*", "build", "dist", "*.egg-info", "__pycache__", "*.so", "*.c", "htmlcov", "bench", "docs"
)


def _source_copy(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    return source


def _pip_wheel(source: Path, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GRIPCORE_")}
    environ.update(CC="false", LDSHARED="false", **env)
    return subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation"),
            *("--disable-pip-version-check", "--wheel-dir", str(out), str(source)),
        ],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_build_without_a_compiler_falls_back_to_the_pure_twin(tmp_path: Path) -> None:
    result = _pip_wheel(_source_copy(tmp_path), tmp_path / "wheels")
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "WARNING: gripcore's compiled hot path (gripcore._fast) could not be built" in output
    assert "Installing the pure-Python twin instead" in output
    [wheel] = (tmp_path / "wheels").glob("gripcore-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "installed")
    assert "gripcore/_fast_py.py" in names
    assert not [
        name for name in names if name.startswith("gripcore/_fast.") and not name.endswith(".pyx")
    ]
    # the wheel alone works: it imports from where it was unpacked, on the pure twin, and says
    # so as `gripcore serve` will at start. `-S` keeps site-packages' .pth files (the editable
    # install of this tree) out; the dependencies come from site-packages, after the wheel.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GRIPCORE_")}
    environ["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "installed"), *site.getsitepackages()])
    probe = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            "import gripcore, gripcore._speedups as s, os;"
            "print(gripcore.__file__);"
            "print(s.COMPILED);"
            "print(s.encode_chunk(b'hi'));"
            "print(s.hot_path_note(s.impl, os.environ))",
        ],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    location, compiled, chunk, note = probe.stdout.splitlines()
    assert location.startswith(str(tmp_path / "installed"))
    assert (compiled, chunk) == ("False", "b'2\\r\\nhi\\r\\n'")
    assert note.startswith("(True, 'hot path: pure-Python twin, because the compiled module")


def test_build_without_a_compiler_fails_when_extensions_are_required(tmp_path: Path) -> None:
    result = _pip_wheel(
        _source_copy(tmp_path), tmp_path / "wheels", GRIPCORE_REQUIRE_EXTENSIONS="1"
    )
    assert result.returncode != 0
    # it failed where it should: the (non-)compiler, asked to compile the hot path
    assert "src/gripcore/_fast.c" in result.stdout + result.stderr
    assert not list((tmp_path / "wheels").glob("*.whl"))
    assert "Installing the pure-Python twin instead" not in result.stdout + result.stderr
