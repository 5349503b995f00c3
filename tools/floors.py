"""Print pip constraints pinning every `>=` floor in pyproject.toml exactly (`name==floor`).

pip has no "lowest versions" resolver; `make test-floors` installs gripcore with these
constraints, so the unit tests run on the oldest releases the metadata claims to support.
Covers the dependencies and the extras that `gripcore[testing,redis,gevent]` pulls in.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("testing", "redis", "gevent")
_FLOOR = re.compile(r"^\s*([A-Za-z0-9._-]+)(\[[^\]]*\])?\s*>=\s*([A-Za-z0-9.]+)\s*$")


def floors(pyproject: dict[str, object]) -> dict[str, str]:
    project = pyproject["project"]
    assert isinstance(project, dict)
    requirements = list(project["dependencies"])
    for extra in EXTRAS:
        requirements += project["optional-dependencies"][extra]
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = _FLOOR.match(requirement)
        if match is None:
            raise SystemExit(f"floors.py: cannot read a floor from {requirement!r}")
        pins[match.group(1).lower()] = match.group(3)
    return pins


def main() -> int:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for name, version in sorted(floors(pyproject).items()):
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
