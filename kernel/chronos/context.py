"""The object every hook receives: what the kernel shares with plugins."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from pydantic import BaseModel

if TYPE_CHECKING:  # pragma: no cover
    from chronos.db.engine import Database
    from chronos.jobs import JobRunner
    from chronos.settings import Settings

T = TypeVar("T")


class PluginContext:
    """Shared, per-app state handed to hooks, jobs and request handlers.

    ``settings`` is the validated configuration; ``section(name)`` a plugin's
    validated section; ``db`` the database (``read()``/``write()`` sessions);
    ``jobs`` the job runner; ``service(Interface)`` another plugin's
    implementation of a kernel contract.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._db: Database | None = None
        self.jobs: JobRunner | None = None
        self._services: dict[type, Any] = {}
        self.state: dict[str, Any] = {}

    @property
    def db(self) -> Database:
        if self._db is None:
            from chronos.db.engine import Database

            dbs = self.settings.kernel.database
            self._db = Database(
                dbs.url,
                schema=dbs.schema_name,
                pool_size=dbs.pool_size,
                busy_timeout_ms=dbs.busy_timeout_ms,
                echo=dbs.echo,
            )
        return self._db

    @property
    def has_db(self) -> bool:
        return self._db is not None

    def section(self, name: str) -> BaseModel:
        """The validated settings section ``name`` (a plugin's pydantic model)."""
        try:
            return self.settings.sections[name]
        except KeyError:
            raise KeyError(f"no settings section {name!r}: is the plugin enabled and does it register one?") from None

    def service(self, interface: type[T]) -> T:
        """The enabled implementation of ``interface``; ``LookupError`` if none."""
        try:
            return self._services[interface]
        except KeyError:
            raise LookupError(f"no enabled plugin provides {interface.__name__}") from None

    def has_service(self, interface: type) -> bool:
        return interface in self._services

    def logger(self, name: str) -> Any:
        return structlog.get_logger(name).bind(plugin=name)
