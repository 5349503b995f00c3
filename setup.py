"""Build the optional compiled hot path (src/gripcore/_fast.pyx).

The pure-Python twin (`gripcore._fast_py`) is complete and passes the same test suite, so the
compiled module is an optimisation, not a requirement:

* default: try to compile; when that fails (no C compiler, no Python headers), warn loudly and
  build a pure-Python package, so `pip install gripcore` works on any host.
* GRIPCORE_REQUIRE_EXTENSIONS=1: a failed compile is a build error (CI and packagers set it, so a
  broken toolchain cannot hide behind the fallback).
* GRIPCORE_NO_EXTENSIONS=1: do not even try (pure-Python install on purpose).

`gripcore serve` says at start which hot path is live (see gripcore._speedups).
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_TRUE = ("1", "true", "yes", "on")

FALLBACK_WARNING = """
********************************************************************************
WARNING: gripcore's compiled hot path (gripcore._fast) could not be built:
    {reason}
Installing the pure-Python twin instead: gripcore works the same, with slower fan-out.
For the compiled one, install a C compiler and the Python headers (Debian/Ubuntu:
`apt-get install gcc python3-dev`) and reinstall. Set GRIPCORE_REQUIRE_EXTENSIONS=1 to
make this an error instead.
********************************************************************************
"""


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


class OptionalBuildExt(build_ext):
    """build_ext that falls back to pure Python when compiling fails, unless required."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # the platform has no compiler at all
            self._fallback(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # the compiler or the linker failed
            self._fallback(exc)

    def _fallback(self, exc: Exception) -> None:
        if _flag("GRIPCORE_REQUIRE_EXTENSIONS"):
            raise exc
        sys.stderr.write(FALLBACK_WARNING.format(reason=f"{type(exc).__name__}: {exc}"))
        sys.stderr.flush()


ext_modules = []
if not _flag("GRIPCORE_NO_EXTENSIONS"):
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [Extension("gripcore._fast", ["src/gripcore/_fast.pyx"])],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
        },
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
