"""The plugin template works outside the repository, as a third party would use it.

The test copies ``examples/plugin-template`` to a temporary directory, renames
the plugin (``hello`` -> ``greeter``: entry point, package, settings, scopes,
table prefix, revision ids), creates a fresh virtual environment with
``python -m venv``, installs the kernel from this checkout plus the renamed
copy (``pip install -c requirements.lock -e <kernel> -e <copy>[test]``: the
pinned versions, from pip's cache when they are there, about 15 s) and runs the
copy's own tests with that environment's pytest.

A fresh venv rather than one that sees the repository's: the repository's venv
has every local plugin (the template among them) installed, so it would prove
nothing about a plugin that only has the kernel next to it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from kernel_support import ROOT

TEMPLATE = ROOT / "examples" / "plugin-template"
SKIP = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".pytest_cache", "data")


def _rename(tree: Path, old: str, new: str) -> None:
    """Rename ``old`` to ``new`` in every path and file of ``tree`` (any capitalisation)."""
    pairs = [(old, new), (old.capitalize(), new.capitalize()), (old.upper(), new.upper())]
    for path in sorted(tree.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            for a, b in pairs:
                text = text.replace(a, b)
            path.write_text(text, encoding="utf-8")
        if old in path.name:
            path.rename(path.with_name(path.name.replace(old, new)))


def _env(venv: Path) -> dict[str, str]:
    """The caller's environment for the copy: its test backends and strictness, nothing else of Chronos."""
    keep = {"CHRONOS_TEST_BACKENDS", "CHRONOS_TEST_PG_URL"}
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHRONOS") or k in keep}
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(var, None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["CHRONOS_STRICT_PLUGINS"] = "1"
    return env


def test_renamed_template_installs_and_passes_its_tests_in_a_fresh_venv(tmp_path):
    assert not tmp_path.resolve().is_relative_to(ROOT)
    plugin = tmp_path / "chronos-greeter"
    shutil.copytree(TEMPLATE, plugin, ignore=SKIP)
    _rename(plugin, "hello", "greeter")
    assert (plugin / "chronos_greeter" / "migrations" / "versions" / "greeter0001_create_greetings.py").exists()
    assert 'greeter = "chronos_greeter.plugin"' in (plugin / "pyproject.toml").read_text(encoding="utf-8")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    env = _env(venv)
    install = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    install += ["-c", str(ROOT / "requirements.lock"), "-e", str(ROOT), "-e", f"{plugin}[test]"]
    res = subprocess.run(install, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr

    # The documented authoring step, run in the plugin's folder with no configuration:
    # the revision lands in the copy, and no database file is left behind.
    chronos = str(venv / "bin" / "chronos")
    res = subprocess.run(
        [chronos, "migrations", "revision", "greeter", "-m", "nothing yet", "--rev-id", "greeter0002"],
        capture_output=True,
        text=True,
        env=env,
        cwd=plugin,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "temporary SQLite database" in res.stderr
    assert (plugin / "chronos_greeter" / "migrations" / "versions" / "greeter0002_nothing_yet.py").exists()
    assert not (plugin / "data").exists()
    assert not [p for p in plugin.rglob("*") if ".db" in p.name], "a database file was left in the plugin's folder"

    res = subprocess.run(
        [chronos, "plugins", "--json"], capture_output=True, text=True, env=env, cwd=plugin, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert '"name": "greeter"' in res.stdout and '"name": "hello"' not in res.stdout

    res = subprocess.run(
        [str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        env=env,
        cwd=plugin,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and " skipped" not in res.stdout
