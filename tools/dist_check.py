"""Build gripcore's sdist and wheel, check what they hold, and smoke-test the wheel installed alone.

Usage: python tools/dist_check.py [--outdir DIR]   (`make dist-check`; CI runs it after `make test`)

1. `python -m build` makes the sdist, then the wheel from that sdist (so a file missing from the
   sdist breaks the wheel build or the smoke test, not a user's install).
2. Both archives must hold the files a user needs (the .pyx, the starter kit, README, LICENSE,
   the adapters packages, the pytest plugin and its entry point).
3. A fresh virtual environment gets the wheel (and its dependencies) and nothing else; from a
   directory outside the source tree, the installed `gripcore serve` runs, answers /healthz and
   /readyz, and the installed `gripcore check proxy` must pass against it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SDIST_MUST_HOLD = (
    "LICENSE",
    "README.md",
    "pyproject.toml",
    "setup.py",
    "src/gripcore/__init__.py",
    "src/gripcore/_fast.pyx",
    "src/gripcore/_fast_py.py",
    "src/gripcore/py.typed",
    "src/gripcore/starter/index.html",
    "src/pytest_gripcore.py",
    "adapters/__init__.py",
    "adapters/asyncio/__init__.py",
    "adapters/gevent/__init__.py",
    "adapters/asgi/__init__.py",
)
WHEEL_MUST_HOLD = (
    "gripcore/__init__.py",
    "gripcore/_fast_py.py",
    "gripcore/py.typed",
    "gripcore/starter/index.html",
    "gripcore/testing/__init__.py",
    "gripcore/adapters/__init__.py",
    "gripcore/adapters/asyncio/__init__.py",
    "gripcore/adapters/gevent/__init__.py",
    "gripcore/adapters/asgi/__init__.py",
    "gripcore/adapters/checker.py",
    "pytest_gripcore.py",
)


def _run(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, check=True)


def _missing(names: set[str], wanted: tuple[str, ...], what: str) -> list[str]:
    return [f"{what} lacks {name}" for name in wanted if name not in names]


def check_sdist(sdist: Path) -> list[str]:
    with tarfile.open(sdist) as tar:
        top = sdist.name.removesuffix(".tar.gz") + "/"
        names = {m.name.removeprefix(top) for m in tar.getmembers()}
    return _missing(names, SDIST_MUST_HOLD, sdist.name)


def check_wheel(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        problems = _missing(names, WHEEL_MUST_HOLD, wheel.name)
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        if not any(n.startswith(f"{info}/") and "LICENSE" in n for n in names):
            problems.append(f"{wheel.name} lacks the LICENSE file")
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    if "[pytest11]" not in entry_points or "gripcore = pytest_gripcore" not in entry_points:
        problems.append(f"{wheel.name} does not register the pytest plugin")
    if "[console_scripts]" not in entry_points:
        problems.append(f"{wheel.name} does not install the gripcore command")
    return problems


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gripcore serve exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"gripcore serve did not listen on port {port} within {limit} s")


def smoke_test(wheel: Path, work: Path) -> None:
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", venv)
    bin_dir = venv / "bin"
    # the testing extra too: gripcore.testing and the pytest plugin are part of what is checked
    _run(
        bin_dir / "python",
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        f"{wheel}[testing]",
    )
    outside = work / "elsewhere"  # no source tree on the path: not ROOT, not its parent
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRIPCORE_", "PYTHON"))}
    _run(
        bin_dir / "python",
        "-c",
        "import gripcore, gripcore.adapters.asyncio, gripcore.testing,"
        " gripcore.asgi, pytest_gripcore;"
        "from gripcore import AsyncPublisher, Publisher;"
        f"assert gripcore.__file__.startswith({str(venv)!r}), gripcore.__file__;"
        "print('imported', gripcore.__version__, 'from', gripcore.__file__)",
        cwd=outside,
        env=env,
    )
    listen, publish, origin = _free_port(), _free_port(), _free_port()
    serve = subprocess.Popen(
        [
            str(bin_dir / "gripcore"),
            "serve",
            "--listen",
            f"127.0.0.1:{listen}",
            "--publish-listen",
            f"127.0.0.1:{publish}",
            "--route",
            f"* 127.0.0.1:{origin},over_http",
            "--sig-key",
            "dist-check-secret-of-at-least-32-bytes",
        ],
        cwd=outside,
        env=env,
    )
    try:
        _wait_listening(publish, serve)
        _wait_listening(listen, serve)
        for path, expected in (("/healthz", b"ok\n"), ("/readyz", b"ready\n")):
            with urllib.request.urlopen(f"http://127.0.0.1:{publish}{path}", timeout=10) as r:
                body = r.read()
            if body != expected:
                raise SystemExit(f"GET {path} answered {body!r}, not {expected!r}")
        _run(
            bin_dir / "gripcore",
            "check",
            "proxy",
            "--proxy",
            f"http://127.0.0.1:{listen}",
            "--publish",
            f"http://127.0.0.1:{publish}",
            "--origin-listen",
            f"127.0.0.1:{origin}",
            "--sig-key",
            "dist-check-secret-of-at-least-32-bytes",
            cwd=outside,
            env=env,
        )
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", default=str(ROOT / "dist"), help="where the archives go")
    args = parser.parse_args()
    outdir = Path(args.outdir)
    shutil.rmtree(outdir, ignore_errors=True)
    _run(sys.executable, "-m", "build", "--outdir", outdir, ROOT)
    (sdist,) = outdir.glob("gripcore-*.tar.gz")
    (wheel,) = outdir.glob("gripcore-*.whl")
    problems = check_sdist(sdist) + check_wheel(wheel)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"dist-check: {sdist.name} and {wheel.name} hold what they must")
    with tempfile.TemporaryDirectory(prefix="gripcore-dist-check-") as tmp:
        smoke_test(wheel, Path(tmp))
    print("dist-check: the installed wheel serves and passes `gripcore check proxy`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
