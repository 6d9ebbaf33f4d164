"""The object every hook receives: what the kernel shares with plugins."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import structlog
from pydantic import BaseModel

from chronos.records import Migrations, Resource, WebAssets

if TYPE_CHECKING:  # pragma: no cover
    from chronos.contracts.outbox import DeliveryTarget, EventType
    from chronos.db.engine import Database
    from chronos.jobs import JobRunner
    from chronos.settings import Settings

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class PluginContext:
    """Shared, per-app state handed to hooks, jobs and request handlers.

    ``settings`` is the validated configuration; ``section(Model)`` a plugin's
    validated section, typed; ``db`` the database (``read()``/``write()``
    sessions); ``jobs`` the job runner; ``service(Interface)`` another plugin's
    implementation of a kernel contract; ``resource(R)`` one of the calling
    plugin's own per-app objects; ``scopes`` every known scope.

    The kernel's runtime fills it in; plugins only read from it.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._db: Database | None = None
        self.jobs: JobRunner | None = None
        self._services: dict[type, Any] = {}
        self._resources: dict[Resource[Any], Any] = {}
        self._declared: set[Resource[Any]] = set()
        self._scopes: Mapping[str, str] = MappingProxyType({})
        self._sections_by_type: dict[type, BaseModel] | None = None
        self._delivery_targets: Mapping[str, DeliveryTarget] = MappingProxyType({})
        self._event_types: Mapping[str, EventType] = MappingProxyType({})
        self._web_assets: Mapping[str, WebAssets] = MappingProxyType({})
        self._migrations: tuple[Migrations, ...] = ()

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
                connect_timeout_seconds=dbs.connect_timeout_seconds,
                echo=dbs.echo,
                write_cache_mib=dbs.sqlite_write_cache_mib,
                checkpoint_mib=dbs.sqlite_checkpoint_mib,
            )
            from chronos.audit_key import bind_audit_key, load_audit_key

            settings = self.settings
            engines = [self._db.reader.sync_engine, self._db.writer.sync_engine]
            bind_audit_key(engines, lambda: load_audit_key(settings))  # read at the first audit write or check
        return self._db

    @property
    def has_db(self) -> bool:
        return self._db is not None

    @property
    def scopes(self) -> Mapping[str, str]:
        """Every scope a key may carry (the kernel's and the plugins'), with its description."""
        return self._scopes

    @property
    def delivery_targets(self) -> Mapping[str, DeliveryTarget]:
        """Every outbox delivery target the enabled plugins register, by name."""
        return self._delivery_targets

    @property
    def event_types(self) -> Mapping[str, EventType]:
        """Every event type the enabled plugins declare (``EventType`` schemas), by name."""
        return self._event_types

    @property
    def web_assets(self) -> Mapping[str, WebAssets]:
        """Every enabled plugin's browser files (``WebAssets`` records), by name: the dashboard finds panels here."""
        return self._web_assets

    @overload
    def section(self, model: type[M]) -> M: ...
    @overload
    def section(self, model: str) -> BaseModel: ...

    def section(self, model: type[M] | str) -> M | BaseModel:
        """A plugin's validated settings section, typed: ``ctx.section(HelloSettings)``.

        A section name (``ctx.section("hello")``) works too, untyped.
        """
        if isinstance(model, str):
            try:
                return self.settings.sections[model]
            except KeyError:
                raise KeyError(
                    f"no settings section {model!r}: is the plugin enabled and does it register one?"
                ) from None
        # Looked up by type on hot paths (a queue's settings per call): index the sections once.
        found = (self._sections_by_type or {}).get(model)
        if found is None:  # not indexed yet, or sections validated since
            self._sections_by_type = {type(v): v for v in self.settings.sections.values()}
            found = self._sections_by_type.get(model)
        if found is not None:
            return found
        raise KeyError(f"no settings section of type {model.__name__}: is the plugin enabled and does it register one?")

    def service(self, interface: type[T]) -> T:
        """The enabled implementation of ``interface``; ``LookupError`` if none."""
        try:
            return cast(T, self._services[interface])
        except KeyError:
            raise LookupError(f"no enabled plugin provides {interface.__name__}") from None

    def has_service(self, interface: type) -> bool:
        return interface in self._services

    def resource(self, resource: Resource[T]) -> T:
        """The object ``resource`` declares, built by the kernel on first use."""
        try:
            return cast(T, self._resources[resource])
        except KeyError:
            pass
        if resource not in self._declared:
            raise LookupError(f"resource {resource.name!r} is not registered by an enabled plugin (register_resources)")
        obj = self._resources[resource] = resource.factory(self)
        return obj

    async def migrate(self, url: str | None = None, *, schema: str | None = None) -> dict[str, list[str]]:
        """Bring the kernel's and every enabled plugin's tables to head, on the configured
        database or on ``url`` (and ``schema``, PostgreSQL); returns what changed per owner."""
        from chronos.db.migrate import migrate

        url, schema = self._where(url, schema)
        return await migrate(url, self._migrations, schema=schema)

    async def migration_status(self, url: str | None = None, *, schema: str | None = None) -> dict[str, Any]:
        """Per owner (``kernel`` and each enabled plugin): ``current`` and ``heads`` revisions,
        every ``known`` revision of the installed code, and its ``version_table``."""
        from chronos.db.migrate import current, known_revisions, owners_for

        url, schema = self._where(url, schema)
        status = await current(url, self._migrations, schema=schema)
        owners = {o.name: o for o in owners_for(self._migrations)}
        return {
            name: {**st, "known": known_revisions(owners[name]), "version_table": owners[name].version_table}
            for name, st in status.items()
        }

    def _where(self, url: str | None, schema: str | None) -> tuple[str, str | None]:
        if url is None:
            dbs = self.settings.kernel.database
            return dbs.url, dbs.schema_name if schema is None else schema
        return url, schema

    def logger(self, name: str) -> Any:
        return structlog.get_logger(name).bind(plugin=name)
