"""Typed records that plugins return from ``register_*`` hooks.

Each record is a small frozen dataclass with a lower-case ``name`` that is unique
across all plugins for its kind; the plugin host rejects duplicates at startup,
naming both plugins.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:  # pragma: no cover
    import typer
    from fastapi import APIRouter

    from chronos.context import PluginContext

T = TypeVar("T")

#: What started a job run: its schedule, or a caller (API, CLI, another plugin).
JobTrigger = Literal["schedule", "manual"]
#: What started a sync run.
SyncTrigger = Literal["schedule", "manual", "api", "cli"]
#: A health block's verdict.
HealthStatus = Literal["ok", "degraded", "error"]

NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(
            f"{kind} name {name!r} is invalid: use lower-case letters, digits, '_', '.', '-'"
            " (starting with a letter, at most 63 characters)"
        )


@dataclass(frozen=True)
class SettingsSection:
    """A top-level configuration section owned by a plugin.

    ``name`` must equal the plugin's name; ``model`` is a pydantic model whose
    fields are the section's keys. Unknown keys are rejected unless the model
    says otherwise (``model_config = ConfigDict(extra="allow")``).
    ``env_only`` lists dotted keys (``"smtp.password"``) that hold secrets:
    startup fails when one is set in a configuration file instead of the
    environment (files end up in backups and repositories).
    """

    name: str
    model: type[BaseModel]
    env_only: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_name("settings section", self.name)


@dataclass(frozen=True)
class Router:
    """A FastAPI router mounted under ``/api/v1``.

    Every route must declare its scope through ``Depends(require_scope("..."))``
    (or a dependency that calls it); startup fails on a route without one.
    """

    name: str
    router: APIRouter

    def __post_init__(self) -> None:
        _check_name("router", self.name)


@dataclass(frozen=True)
class Migrations:
    """Alembic revisions shipped inside a plugin package.

    ``package`` is the import package holding ``migrations/versions/``; its
    revisions are recorded in the version table ``alembic_version_<name>``.
    ``requires`` names plugins whose tables these revisions reference (they are
    migrated first). ``after_migrate`` runs with the synchronous migration
    connection after every owner is at head: re-create objects such as SQLite
    triggers idempotently there.
    """

    name: str
    package: str
    requires: tuple[str, ...] = ()
    after_migrate: Callable[[Any], None] | None = None

    def __post_init__(self) -> None:
        _check_name("migrations", self.name)

    @property
    def versions_dir(self) -> str:
        return str(files(self.package) / "migrations" / "versions")

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.name.replace('-', '_').replace('.', '_')}"


@dataclass(frozen=True)
class JobContext:
    """What a job function receives: the plugin context and the run's trigger."""

    ctx: PluginContext
    job: Job
    trigger: JobTrigger
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """Background work run by the kernel's job runner.

    Give ``interval_seconds`` or ``cron`` (five fields, UTC) for a schedule, or
    neither for a job that only runs on demand. Runs of one job never overlap.
    ``jitter_seconds`` spreads scheduled runs; ``run_at_start`` fires once when
    the runner starts. ``func`` is ``async def func(job: JobContext) -> Any``.
    """

    name: str
    func: Callable[[JobContext], Awaitable[Any]]
    interval_seconds: float | None = None
    cron: str | None = None
    jitter_seconds: float = 0
    run_at_start: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("job", self.name)
        if self.interval_seconds is not None and self.cron is not None:
            raise ValueError(f"job {self.name!r}: give interval_seconds or cron, not both")
        if self.interval_seconds is not None and self.interval_seconds <= 0:
            raise ValueError(f"job {self.name!r}: interval_seconds must be positive")


@dataclass(frozen=True)
class Scope:
    """An authorisation scope a plugin's routes require (``notes.read``…)."""

    name: str
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("scope", self.name)


@dataclass(frozen=True)
class CliCommand:
    """A sub-command group added to the ``chronos`` command line, or one command.

    Give ``app`` (a ``typer.Typer``) for a group (``chronos hello greet``), or
    ``command`` (a typer command function) for a single top-level command that
    takes its own arguments (``chronos restore ARCHIVE``).
    """

    name: str
    app: typer.Typer | None = None
    help: str = ""
    command: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        _check_name("cli command", self.name)
        if (self.app is None) == (self.command is None):
            raise ValueError(f"cli command {self.name!r}: give app (a group) or command (one command), not both")


@dataclass(frozen=True)
class Service:
    """An implementation of a kernel contract other plugins may use.

    ``interface`` is a class from :mod:`chronos.plugin` (for example the event
    store contract); ``factory`` builds the implementation from the plugin
    context once at startup. Consumers look it up with ``ctx.service(interface)``.
    Exactly one enabled plugin may provide each interface.
    """

    name: str
    interface: type
    factory: Callable[[PluginContext], Any]

    def __post_init__(self) -> None:
        _check_name("service", self.name)


@dataclass(frozen=True)
class HealthCheck:
    """A block in ``GET /health``.

    ``func`` is ``async def check(ctx) -> HealthResult``; it runs with a short
    timeout. ``"degraded"`` makes the whole report degraded (still 200);
    ``"error"`` with ``critical=True`` makes it 503.
    """

    name: str
    func: Callable[[PluginContext], Awaitable[HealthResult]]
    critical: bool = False

    def __post_init__(self) -> None:
        _check_name("health check", self.name)


#: Top-level paths the kernel keeps for itself: web assets may not be served there.
RESERVED_WEB_PATHS = ("/api/", "/docs/", "/redoc/", "/health/", "/metrics/", "/openapi.json/")
WEB_PATH_RE = re.compile(r"^/(?:[a-z0-9][a-z0-9_.-]*/)+$")


@dataclass(frozen=True)
class WebAssets:
    """Browser files (ES modules, CSS, images) a plugin serves: the dashboard, or a panel for it.

    The kernel serves the files below ``directory`` of the import package
    ``package`` at ``/ui/plugins/<name>/`` (or at ``path``, such as ``"/ui/"``),
    for GET and HEAD, without a key: they hold code and styles, never data, which
    the browser fetches from the API with the user's key. Every answer carries a
    strict Content-Security-Policy (only this origin's scripts and styles, no
    inline code, no framing), ``Referrer-Policy: no-referrer`` and
    ``X-Content-Type-Options: nosniff``; ``index.html`` answers a path ending in
    ``/``. ``home=True`` makes ``/`` redirect to ``path`` instead of ``/docs``
    (one plugin at most).

    A directory holding ``panel.js`` is a dashboard panel: the ``web`` plugin
    imports that ES module and calls its ``render`` export (web/README.md).

    Example: ``WebAssets("hello", "chronos_hello", "static")`` serves
    ``chronos_hello/static/panel.js`` at ``/ui/plugins/hello/panel.js``.
    """

    name: str
    package: str
    directory: str = "static"
    path: str | None = None
    home: bool = False

    def __post_init__(self) -> None:
        _check_name("web assets", self.name)
        if self.path is not None and (
            not WEB_PATH_RE.match(self.path) or "/../" in self.path or self.path.startswith(RESERVED_WEB_PATHS)
        ):
            raise ValueError(
                f"web assets {self.name!r}: path {self.path!r} must look like '/ui/' (lower-case segments, a"
                " trailing '/') and stay out of /api, /docs, /redoc, /health, /metrics and /openapi.json"
            )

    @property
    def url_path(self) -> str:
        """Where the files are served, with a trailing ``/``."""
        return self.path or f"/ui/plugins/{self.name}/"

    @property
    def root(self) -> Any:
        """The directory holding the files (an importlib.resources traversable)."""
        return files(self.package) / self.directory


@dataclass(frozen=True)
class HealthResult:
    status: HealthStatus
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JsonSchema:
    """A public payload model exported as ``schemas/<name>.schema.json``."""

    name: str
    model: type[BaseModel]

    def __post_init__(self) -> None:
        _check_name("schema", self.name)


@dataclass(frozen=True, eq=False)
class Resource(Generic[T]):
    """A per-app object a plugin owns (a queue, a cache, a sender), typed.

    Declare it once at module level, return it from ``register_resources`` and
    reach it anywhere with ``ctx.resource(QUEUE)``, which is typed as ``T``. The
    kernel builds it with ``factory(ctx)`` when the runtime starts (or on first
    use during start-up, so services may depend on it) and, at shutdown, awaits
    ``close(obj)`` in reverse order of creation. Other plugins cannot reach it:
    they cannot import the declaring module.

    Example::

        QUEUE: Resource[CommandQueue] = Resource("commands.queue", CommandQueue, close=CommandQueue.aclose)
    """

    name: str
    factory: Callable[[PluginContext], T]
    close: Callable[[T], Awaitable[None] | None] | None = None

    def __post_init__(self) -> None:
        _check_name("resource", self.name)
