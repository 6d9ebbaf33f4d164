"""The kernel reads bottom-up: no module imports from a layer above its own.

Every ``import`` counts, also one inside a function; only imports under
``if TYPE_CHECKING:`` are exempt (annotations, no dependency at run time: the
records and contracts name ``PluginContext`` in their signatures). A new module
must be placed in a layer here, so the picture stays complete.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNEL = ROOT / "kernel" / "chronos"

#: Bottom to top. A module may import from its own layer and the layers below.
LAYERS: list[tuple[str, set[str]]] = [
    (
        "foundation",
        {
            "chronos",
            "chronos.exceptions",
            "chronos.identity",
            "chronos.records",
            "chronos.settings",
            "chronos.logs",
            "chronos.redact",
            "chronos.audit_key",
            "chronos.metrics",
            "chronos.pagination",
            "chronos.openapi",
            "chronos.net",
            "chronos.contracts",
            "chronos.contracts.events",
            "chronos.contracts.ical",
            "chronos.contracts.mail",
            "chronos.contracts.outbox",
            "chronos.contracts.planning",
            "chronos.contracts.webhook_signing",
            "chronos.db",
            "chronos.db.base",
            "chronos.db.engine",
            "chronos.db.pool",
            "chronos.db.sqlite_driver",
            "chronos.db.models",
            "chronos.db.sync_models",
            "chronos.db.migrate",
        },
    ),
    ("context", {"chronos.context", "chronos.hookspecs"}),
    ("core", {"chronos.host", "chronos.jobs", "chronos.pipeline", "chronos.audit", "chronos.keys", "chronos.schemas"}),
    ("runtime", {"chronos.runtime"}),
    ("http", {"chronos.routes", "chronos.errors", "chronos.auth", "chronos.api", "chronos.sync_api"}),
    ("app", {"chronos.app", "chronos.plugin"}),
    ("entry points", {"chronos.cli", "chronos.testing"}),
]


def module_name(path: Path) -> str:
    parts = ("chronos", *path.relative_to(KERNEL).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of import nodes inside ``if TYPE_CHECKING:`` blocks."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def runtime_imports(source: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, kernel module) for every import of a kernel module, in functions too."""
    tree = ast.parse(source)
    skip = _type_checking_nodes(tree)
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "chronos"]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and node.module.split(".")[0] == "chronos"
        ):
            for alias in node.names:
                # `from chronos import api` imports the module chronos.api; `from chronos import __version__` does not.
                sub = f"{node.module}.{alias.name}"
                out.append((node.lineno, sub if sub in known else node.module))
    return out


def layer_of() -> dict[str, int]:
    return {module: rank for rank, (_name, modules) in enumerate(LAYERS) for module in modules}


def violations(path: Path, source: str, layers: dict[str, int]) -> list[str]:
    me = module_name(path)
    bad = []
    for line, target in runtime_imports(source, set(layers)):
        if target in layers and layers[target] > layers[me]:
            bad.append(
                f"{path.relative_to(ROOT)}:{line}: {me} ({LAYERS[layers[me]][0]}) imports {target}"
                f" ({LAYERS[layers[target]][0]}), a higher layer"
            )
    return bad


def test_every_kernel_module_has_a_layer():
    modules = {module_name(p) for p in KERNEL.rglob("*.py")}
    placed = set(layer_of())
    assert not modules - placed, f"place these modules in LAYERS: {sorted(modules - placed)}"
    assert not placed - modules, f"LAYERS names modules that do not exist: {sorted(placed - modules)}"


def test_no_kernel_module_imports_from_a_higher_layer():
    layers = layer_of()
    bad: list[str] = []
    for path in sorted(KERNEL.rglob("*.py")):
        bad += violations(path, path.read_text(encoding="utf-8"), layers)
    assert not bad, "\n".join(bad)


def test_the_check_catches_upward_imports_even_inside_functions():
    layers = layer_of()
    errors = KERNEL / "errors.py"
    assert violations(errors, "def f():\n    from chronos.app import create_app\n", layers)
    assert violations(errors, "from chronos import app\n", layers)
    assert not violations(
        errors, "from chronos import __version__\nfrom chronos.routes import effective_routes\n", layers
    )
    records = KERNEL / "records.py"
    assert not violations(
        records, "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from chronos.context import X\n", layers
    )
    assert violations(records, "import chronos.context\n", layers)
