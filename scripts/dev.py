#!/usr/bin/env python3
"""Set up a development environment and run the service or the tests.

    python3.11 scripts/dev.py run      # venv + install + serve the demo (SQLite) on 127.0.0.1:8000
    python3.11 scripts/dev.py run --port 8080 --host 0.0.0.0   # options go to `chronos serve`
    python3.11 scripts/dev.py test     # venv + install + the whole suite (SQLite and PostgreSQL)
    python3.11 scripts/dev.py setup    # only create/refresh .venv
    python3.11 scripts/dev.py generate # rewrite schemas/ and config/chronos.example.yaml

`run` replaces itself with the server (exec): Ctrl-C or SIGTERM to its PID stops
the service, and no process is left holding the port. CHRONOS_CONFIG names
another config file (default config/demo.yaml).

Only the standard library is used here, so a fresh clone with Python 3.11 is
enough. Installs are pinned by requirements.lock and skipped when nothing that
affects them changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
PY = BIN / "python"
STAMP = VENV / ".chronos-install-stamp"


def log(msg: str) -> None:
    print(f"[dev] {msg}", file=sys.stderr, flush=True)


def local_packages() -> list[Path]:
    pkgs = [ROOT]
    for group in ("plugins_builtin", "plugins_contrib"):
        pkgs += sorted(p.parent for p in (ROOT / group).glob("*/pyproject.toml"))
    for extra in (ROOT / "web", ROOT / "examples" / "plugin-template"):
        if (extra / "pyproject.toml").exists():
            pkgs.append(extra)
    return pkgs


def repo_plugins() -> list[str]:
    """The plugin names (entry points) of this repository's own plugin distributions.

    The committed generated files describe these, whatever else is installed:
    not the plugin template, not a third party's plugin.
    """
    names: list[str] = []
    for pkg in local_packages():
        if pkg == ROOT or pkg.parent.name == "examples":
            continue
        project = tomllib.loads((pkg / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
        names += project.get("entry-points", {}).get("chronos.plugins", {})
    return sorted(names)


def generate() -> int:
    """Rewrite the committed generated files from this repository's plugins."""
    setup()
    only = [arg for name in repo_plugins() for arg in ("--plugin", name)]
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHRONOS")}
    for cmd in (["schemas", "export", *only], ["config", "example", *only]):
        rc = subprocess.call([str(BIN / "chronos"), *cmd], env=env, cwd=ROOT)
        if rc:
            return rc
    return 0


def fingerprint() -> str:
    h = hashlib.sha256()
    h.update(sys.version.encode())
    for path in [ROOT / "requirements.lock", *(p / "pyproject.toml" for p in local_packages())]:
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def setup() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script runs before any venv exists
        sys.exit("error: Python 3.11 or newer is required (run with python3.11)")
    if not PY.exists():
        log("creating .venv")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    want = fingerprint()
    if STAMP.exists() and STAMP.read_text() == want:
        return
    log("installing pinned dependencies and the local packages (first run takes about a minute)")
    env = dict(os.environ)
    # caldav pulls in urllib3-future, which by default overwrites urllib3 itself;
    # this keeps it in its own namespace (see requirements.lock).
    env["URLLIB3_NO_OVERRIDE"] = "1"
    cmd = [
        str(PY),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "-q",
        "--no-binary",
        "urllib3-future",
        "-c",
        str(ROOT / "requirements.lock"),
    ]
    for pkg in local_packages():
        target = str(pkg) + ("[test]" if pkg == ROOT else "")
        cmd += ["-e", target]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    STAMP.write_text(want)


def postgres_up(host: str = "127.0.0.1", port: int = 5432) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def ensure_postgres() -> None:
    if os.environ.get("CHRONOS_TEST_BACKENDS", "sqlite,postgresql").find("postgresql") < 0:
        return
    if postgres_up():
        return
    ctl = shutil.which("pg_ctlcluster")
    versions = sorted(Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").exists() else []
    if ctl and versions:
        log(f"PostgreSQL is down; starting cluster {versions[-1].name}/main")
        subprocess.run([ctl, "--skip-systemctl-redirect", versions[-1].name, "main", "start"], check=False)
        for _ in range(50):
            if postgres_up():
                return
            time.sleep(0.2)
    log("PostgreSQL at 127.0.0.1:5432 is unreachable; the PostgreSQL half of the suite will fail")


def run(args: list[str]) -> int:
    setup()
    config = os.environ.get("CHRONOS_CONFIG", str(ROOT / "config" / "demo.yaml"))
    env = dict(os.environ, CHRONOS_CONFIG=config)
    os.chdir(ROOT)
    # `chronos serve` prints the address it binds (options, config file or environment).
    log(f"starting chronos serve {' '.join(args)} with {os.path.relpath(config, ROOT)}".replace("  ", " "))
    chronos = str(BIN / "chronos")
    # exec, not a child process: signals reach the server itself and nothing is orphaned.
    os.execve(chronos, [chronos, "serve", *args], env)


def test(args: list[str]) -> int:
    setup()
    ensure_postgres()
    env = dict(os.environ, CHRONOS_STRICT_PLUGINS="1")
    env.pop("CHRONOS_CONFIG", None)
    os.chdir(ROOT)
    return subprocess.call([str(PY), "-m", "pytest", *args], env=env)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "test", "setup", "generate"):
        print(__doc__, file=sys.stderr)
        return 2
    verb, rest = sys.argv[1], sys.argv[2:]
    if verb == "setup":
        setup()
        return 0
    if verb == "generate":
        return generate()
    return run(rest) if verb == "run" else test(rest)


if __name__ == "__main__":
    sys.exit(main())
