"""Import boundaries: the kernel knows no plugin; plugins use only the public surface.

Both rules are checked statically with ``ast`` over every source file, so an
import hidden behind ``TYPE_CHECKING`` or inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

from chronos.host import installed_plugins
from kernel_support import ROOT

KERNEL_DIRS = [ROOT / "kernel" / "chronos", ROOT / "migrations"]
PUBLIC_MODULES = {"chronos.plugin", "chronos.testing"}


def plugin_distributions() -> list[Path]:
    """Every plugin distribution directory in the repository."""
    dists = []
    for group in ("plugins_builtin", "plugins_contrib"):
        dists += sorted(p.parent for p in (ROOT / group).glob("*/pyproject.toml"))
    for extra in (ROOT / "web", ROOT / "examples" / "plugin-template"):
        if (extra / "pyproject.toml").exists():
            dists.append(extra)
    return dists


def packages_of(dist: Path) -> set[str]:
    """Top-level import packages a distribution directory ships."""
    return {
        p.name
        for p in dist.iterdir()
        if p.is_dir()
        and p.name not in ("tests", "build", "dist")
        and not p.name.endswith(".egg-info")
        and not p.name.startswith(".")
        and any(p.rglob("*.py"))
    }


def all_plugin_packages() -> set[str]:
    names = {ep.module.split(".")[0] for ep in installed_plugins().values()}
    for dist in plugin_distributions():
        names |= packages_of(dist)
    return names


def imports(source: str, filename: str = "<src>") -> list[tuple[int, str]]:
    """(line, dotted module) for every absolute import; ``from a import b`` yields ``a.b`` too."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return out


def kernel_violations(source: str, plugin_packages: set[str], filename: str = "<src>") -> list[str]:
    bad = []
    for line, module in imports(source, filename):
        top = module.split(".")[0]
        if top in plugin_packages or top.startswith("chronos_"):
            bad.append(f"{filename}:{line}: imports plugin package {module!r}")
    return bad


def plugin_violations(source: str, own: set[str], plugin_packages: set[str], filename: str = "<src>") -> list[str]:
    bad = []
    for line, module in imports(source, filename):
        top = module.split(".")[0]
        if top == "chronos":
            parts = module.split(".")
            # `from chronos import plugin` shows up as both "chronos" and "chronos.plugin".
            if len(parts) == 1:
                continue
            if ".".join(parts[:2]) not in PUBLIC_MODULES:
                bad.append(f"{filename}:{line}: imports private kernel module {module!r}")
        elif (top in plugin_packages or top.startswith("chronos_")) and top not in own:
            bad.append(f"{filename}:{line}: imports another plugin's package {module!r}")
    return bad


def test_scanners_catch_violations():
    packages = {"chronos_hello", "chronos_events"}
    assert kernel_violations("import chronos_events.models", packages)
    assert kernel_violations("def f():\n    from chronos_hello import plugin\n", packages)
    assert kernel_violations("from chronos_future import x", set())
    assert not kernel_violations("from chronos.db import base\nimport sqlalchemy", packages)
    own = {"chronos_hello"}
    assert plugin_violations("from chronos.db.base import Base", own, packages)
    assert plugin_violations("from chronos import settings", own, packages)
    assert plugin_violations("import chronos.host", own, packages)
    assert plugin_violations("from chronos_events.models import Event", own, packages)
    assert not plugin_violations(
        "from chronos.plugin import hookimpl\nfrom chronos import plugin, testing\nimport chronos.testing\n"
        "from chronos_hello.models import Greeting\nimport sqlalchemy as sa",
        own,
        packages,
    )


def test_kernel_never_imports_a_plugin_package():
    packages = all_plugin_packages()
    assert "chronos_hello" in packages
    bad = []
    files = [f for d in KERNEL_DIRS for f in sorted(d.rglob("*.py"))]
    assert len(files) > 20
    for path in files:
        bad += kernel_violations(path.read_text(encoding="utf-8"), packages, str(path.relative_to(ROOT)))
    assert not bad, "\n".join(bad)


def test_plugins_import_only_the_public_surface():
    packages = all_plugin_packages()
    bad = []
    dists = plugin_distributions()
    assert ROOT / "examples" / "plugin-template" in dists
    for dist in dists:
        own = packages_of(dist)
        # The shipped packages; a plugin's own tests may reach further (chronos.testing is the kit).
        for package in sorted(own):
            for path in sorted((dist / package).rglob("*.py")):
                bad += plugin_violations(path.read_text(encoding="utf-8"), own, packages, str(path.relative_to(ROOT)))
    assert not bad, "\n".join(bad)


# Attribute chains a plugin must not follow: the raw configuration (another
# plugin's section, secrets in files) and the app's private state (another
# plugin's objects). Plugins get their section with ctx.section(Model), their
# objects with ctx.resource(R) and the context in routes with `ctx: Context`.
FORBIDDEN_ATTRIBUTES = {
    ("settings", "raw"): "reads the raw configuration; use ctx.section(YourSettings)",
    ("app", "state"): "reads the app's private state; take `ctx: Context` and use ctx.resource(...)",
    ("ctx", "state"): "reads a shared state table; declare a Resource and use ctx.resource(...)",
    ("ctx", "_services"): "writes the kernel's services table; return Service records from register_services",
}


def state_violations(source: str, filename: str = "<src>") -> list[str]:
    bad = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute):
            base = node.value
            owner = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
            reason = FORBIDDEN_ATTRIBUTES.get((owner, node.attr))
            if reason:
                bad.append(f"{filename}:{node.lineno}: {reason}")
    return bad


def test_state_scanner_catches_violations():
    assert state_violations("x = ctx.settings.raw.data")
    assert state_violations("ctx = request.app.state.chronos")
    assert state_violations("q = self.ctx.state['commands.queue']")
    assert state_violations("ctx._services[I] = obj")
    assert not state_violations("s = ctx.section(HelloSettings)\nq = ctx.resource(QUEUE)\nstate = 1")


def test_plugins_reach_no_raw_settings_and_no_shared_state():
    bad = []
    for dist in plugin_distributions():
        for package in sorted(packages_of(dist)):
            for path in sorted((dist / package).rglob("*.py")):
                bad += state_violations(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not bad, "\n".join(bad)
