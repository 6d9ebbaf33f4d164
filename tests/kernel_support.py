"""Helpers for the kernel's tests: in-process plugins, the CLI as a subprocess, waiting."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from chronos.plugin import hookimpl

ROOT = Path(__file__).resolve().parent.parent
CHRONOS = str(Path(sys.executable).parent / "chronos")


def repo_plugins() -> list[str]:
    """The plugin names of this repository's own plugin distributions (``scripts/dev.py``'s list)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("chronos_dev_script", ROOT / "scripts" / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names: list[str] = module.repo_plugins()
    return names


def make_plugin(**hooks: Callable[..., Any]) -> SimpleNamespace:
    """An in-process plugin object: each keyword is a hook implementation.

    Pass it to ``create_app(plugins=[("name", make_plugin(...))])`` or to the
    ``chronos_app`` fixture.
    """
    return SimpleNamespace(**{name: hookimpl(func) for name, func in hooks.items()})


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without any Chronos variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHRONOS")}
    env.update(extra)
    return env


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def db_config(database: Any, **sections: Any) -> dict[str, Any]:
    """A config mapping for ``database`` (a chronos.testing TestDatabase) plus sections."""
    out: dict[str, Any] = {"database": database.settings_section(), "logging": {"level": "warning"}}
    for key, value in sections.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def run_cli(
    *args: str,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``chronos ARGS`` in a subprocess with a clean environment."""
    cmd = [CHRONOS, *args]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=clean_env(**(env or {})), cwd=cwd or ROOT, timeout=timeout
    )


def cli_json(*args: str, **kwargs: Any) -> Any:
    res = run_cli(*args, **kwargs)
    assert res.returncode == 0, f"chronos {' '.join(args)} exited {res.returncode}: {res.stderr}"
    return json.loads(res.stdout)


async def wait_until(
    predicate: Callable[[], Any | Awaitable[Any]], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)


def is_problem(response: Any, status: int) -> dict[str, Any]:
    """Assert ``response`` is RFC 9457 problem+json with ``status``; return the body."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status
    for member in ("type", "title", "detail"):
        assert isinstance(body[member], str) and body[member], body
    return body


def fake_distribution(site: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
    """Install a tiny distribution into ``site`` (put it on PYTHONPATH): real entry points, no pip.

    ``entry_points`` maps plugin names to module paths in the group
    ``chronos.plugins``; ``modules`` maps module file names to their source.
    """
    site.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source, encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-0.0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n", encoding="utf-8")
    lines = ["[chronos.plugins]", *(f"{k} = {v}" for k, v in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return site


def invoke_cli(
    *args: str, config: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``chronos ARGS`` in this process (typer's runner): the same commands without
    paying the interpreter start-up; safe to call from async tests (it runs in a thread)."""
    from typer.testing import CliRunner

    from chronos.cli import app

    argv = [*args, *(["--config", str(config)] if config is not None else [])]
    # Unset every Chronos variable for the call so the developer's environment cannot leak in.
    unset: dict[str, str | None] = {k: None for k in os.environ if k.upper().startswith("CHRONOS")}
    # The CLI configures logging onto the runner's captured stderr, which closes
    # afterwards: put the process's logging back as it was.
    import logging

    import structlog

    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    try:
        result = CliRunner().invoke(app, argv, env={**unset, **(env or {})})
    finally:
        structlog.configure(**saved_structlog)
        root.handlers[:], level = saved_root[0], saved_root[1]
        root.setLevel(level)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(argv, result.exit_code, result.stdout, result.stderr)


async def invoke_cli_async(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(invoke_cli, *args, **kwargs)
