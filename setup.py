"""Build the optional compiled hot path (src/gripcore/_fast.pyx).

GRIPCORE_NO_EXTENSIONS=1 skips the extension entirely (pure-Python install).
GRIPCORE_REQUIRE_EXTENSIONS=1 turns a failed compile into a build error; without it
a compile failure is also an error, because a silent fallback would hide a broken
toolchain in CI. Users who cannot compile set GRIPCORE_NO_EXTENSIONS=1 on purpose.
"""

import os

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("GRIPCORE_NO_EXTENSIONS", "") not in ("1", "true", "yes"):
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

setup(ext_modules=ext_modules)
