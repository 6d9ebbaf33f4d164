"""The plugin host: the kernel's one façade over pluggy and entry points.

Discovery reads the entry-point group ``chronos.plugins`` once
(:func:`installed_plugins`); the host loads the enabled ones, registers them
with pluggy, calls the ``register_*`` hooks one plugin at a time (so every
record is attributed to its plugin) and rejects duplicates naming both sides.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

import pluggy
import structlog

from chronos import hookspecs
from chronos.context import PluginContext
from chronos.contracts.events import Enricher, Normalizer, Sink, Source
from chronos.contracts.outbox import DeliveryTarget, EventType
from chronos.records import (
    CliCommand,
    HealthCheck,
    Job,
    JsonSchema,
    Migrations,
    Resource,
    Router,
    Scope,
    Service,
    SettingsSection,
    WebAssets,
)
from chronos.settings import (
    KERNEL_SECTIONS,
    ConfigError,
    Settings,
    no_plugins,
    strict_plugins,
    suggest,
    validate_section,
)

GROUP = "chronos.plugins"
PLUGIN_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,46}$")
log = structlog.get_logger("chronos.host")

#: The scopes of the kernel's own routes; plugins register theirs (``register_scopes``).
KERNEL_SCOPES = {
    "events.read": "Read events, notes, links, templates and sync runs",
    "events.write": "Create, change and delete events; start syncs",
    "admin": "Everything, including keys, whitelists, workflows, plugins and the audit log",
    "health.read": "The detailed GET /health report: check errors, calendars, versions, plugins, runner hosts",
    "metrics.read": "GET /metrics, /docs and /openapi.json when server.public_metrics / public_docs keep them private",
}

#: register_* hooks other than settings, with the record type each must return.
RECORD_HOOKS: dict[str, type] = {
    "register_scopes": Scope,
    "register_routers": Router,
    "register_migrations": Migrations,
    "register_jobs": Job,
    "register_cli": CliCommand,
    "register_services": Service,
    "register_resources": Resource,
    "register_health_checks": HealthCheck,
    "register_schemas": JsonSchema,
    "register_sources": Source,
    "register_normalizers": Normalizer,
    "register_enrichers": Enricher,
    "register_sinks": Sink,
    "register_delivery_targets": DeliveryTarget,
    "register_web_assets": WebAssets,
}


PluginStatus = Literal["enabled", "disabled", "failed"]


#: The kinds of record a plugin can contribute, as ``describe()`` lists them.
RECORD_KINDS = ["settings", *(hook.removeprefix("register_") for hook in RECORD_HOOKS)]


class PluginError(Exception):
    """A plugin problem that stops startup (duplicates, collisions, strict load failures)."""


@dataclass
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    status: PluginStatus
    error: str | None = None
    obj: Any = None
    hooks: list[str] = field(default_factory=list)
    records: dict[str, list[str]] = field(default_factory=dict)
    routes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "hooks": sorted(self.hooks),
            "records": {kind: sorted(self.records.get(kind, [])) for kind in RECORD_KINDS},
            "routes": sorted(self.routes),
        }


def installed_plugins() -> dict[str, EntryPoint]:
    """Every entry point in ``chronos.plugins``, by name (the one discovery path)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    return dict(sorted(found.items()))


PluginSpec = str | tuple[str, Any]
Owned = list[tuple[str, Any]]


class PluginHost:
    """Loads the enabled plugins and collects their records."""

    def __init__(
        self, settings: Settings, plugins: Iterable[PluginSpec] | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.env = env
        self.pm = pluggy.PluginManager("chronos")
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.records: dict[str, list[tuple[str, Any]]] = {hook: [] for hook in RECORD_HOOKS}
        self.sections: dict[str, SettingsSection] = {}
        self.strict = strict_plugins(settings, env)
        self._explicit = list(plugins) if plugins is not None else None

    # -- discovery and loading -------------------------------------------------

    def _selection(self, installed: dict[str, EntryPoint]) -> tuple[list[tuple[str, Any]], list[str]]:
        """(name, entry point or object) pairs to load, and problems found."""
        problems: list[str] = []
        cfg = self.settings.kernel.plugins
        if self._explicit is not None:
            chosen: list[tuple[str, Any]] = []
            for spec in self._explicit:
                if isinstance(spec, tuple):
                    chosen.append(spec)
                elif spec in installed:
                    chosen.append((spec, installed[spec]))
                else:
                    problems.append(f"plugin {spec!r} is not installed{suggest(spec, list(installed))}")
            return chosen, problems
        if no_plugins(self.env):
            return [], problems
        names = list(installed)
        for key, listed in (("enabled", cfg.enabled or []), ("disabled", cfg.disabled)):
            for name in listed:
                if name not in installed:
                    problems.append(
                        f"plugins.{key}: unknown plugin {name!r}{suggest(name, names)}; "
                        f"installed: {', '.join(names) or 'none'}"
                        f" [{self.settings.raw.origin(('plugins', key))}]"
                    )
        wanted = cfg.enabled if cfg.enabled is not None else names
        chosen = [(n, installed[n]) for n in wanted if n in installed and n not in cfg.disabled]
        for name in names:
            if name not in dict(chosen):
                ep = installed[name]
                self.infos[name] = PluginInfo(name, *_dist(ep), status="disabled")
        return chosen, problems

    def load(self, ctx: PluginContext) -> None:
        installed = installed_plugins()
        chosen, problems = self._selection(installed)
        if problems:
            raise ConfigError(problems)
        for name, target in chosen:
            self._load_one(name, target)
        self._validate_sections()
        self._collect(ctx)

    def _fail(self, name: str, target: Any, stage: str, exc: BaseException) -> None:
        message = f"plugin {name!r} failed to {stage}: {type(exc).__name__}: {exc}"
        if self.strict:
            raise PluginError(message + " (strict mode: CHRONOS_STRICT_PLUGINS / plugins.strict)") from exc
        log.error("plugin_failed", plugin=name, stage=stage, error=str(exc), tb=traceback.format_exc(limit=5))
        info = self.infos.get(name) or PluginInfo(name, *_dist(target), status="failed")
        info.status, info.error, info.hooks, info.records, info.routes = "failed", message, [], {}, []
        self.infos[name] = info
        obj = info.obj
        if obj is not None and self.pm.is_registered(obj):
            self.pm.unregister(obj)

    def _load_one(self, name: str, target: Any) -> None:
        if not PLUGIN_NAME_RE.match(name):
            raise PluginError(f"plugin name {name!r} is invalid: use [a-z][a-z0-9_]*, at most 47 characters")
        if name in KERNEL_SECTIONS:
            raise PluginError(f"plugin name {name!r} collides with the kernel's configuration section {name!r}")
        dist = _dist(target)
        try:
            obj = target.load() if isinstance(target, EntryPoint) else target
        except Exception as exc:  # noqa: BLE001 - any import error makes the plugin "failed"
            self._fail(name, target, "import", exc)
            return
        info = PluginInfo(name, *dist, status="enabled", obj=obj)
        self.infos[name] = info
        try:
            self.pm.register(obj, name=name)
            self.pm.check_pending()
        except Exception as exc:  # noqa: BLE001
            self._fail(name, target, "register its hooks", exc)
            return
        info.hooks = [hc.name for hc in self.pm.get_hookcallers(obj) or []]

    def enabled(self) -> list[str]:
        return [n for n, i in self.infos.items() if i.status == "enabled"]

    def _impls(self, hook_name: str) -> list[tuple[str, Any]]:
        """(plugin name, hookimpl) for one hook, in explicit order: tryfirst, normal, trylast, then by name."""
        hook = getattr(self.pm.hook, hook_name)
        impls = [(self.pm.get_name(i.plugin) or "", i) for i in hook.get_hookimpls()]
        rank = lambda i: 0 if i.tryfirst else (2 if i.trylast else 1)  # noqa: E731
        return sorted(impls, key=lambda p: (rank(p[1]), p[0]))

    def call_register(self, hook_name: str, plugin: str, impl: Any, **kwargs: Any) -> list[Any]:
        args = {a: kwargs[a] for a in impl.argnames if a in kwargs}
        result = impl.function(**args)
        if inspect.isawaitable(result):
            raise TypeError(f"{hook_name} must be synchronous")
        if result is None:
            return []
        if not isinstance(result, (list, tuple)):
            result = [result]
        return list(result)

    def _validate_sections(self) -> None:
        problems: list[str] = []
        owner: dict[str, str] = {}
        for plugin, impl in self._impls("register_settings"):
            try:
                records = self.call_register("register_settings", plugin, impl)
                _check_types("register_settings", plugin, records, SettingsSection)
            except PluginError:
                raise
            except Exception as exc:  # noqa: BLE001
                self._fail(plugin, self.infos[plugin].obj, "register its settings", exc)
                continue
            for rec in records:
                if rec.name in KERNEL_SECTIONS:
                    raise PluginError(f"plugin {plugin!r} declares settings section {rec.name!r}, a kernel section")
                if rec.name in owner:
                    raise PluginError(
                        f"settings section {rec.name!r} is declared by both {owner[rec.name]!r} and {plugin!r}"
                    )
                if rec.name != plugin:
                    raise PluginError(
                        f"plugin {plugin!r} declares settings section {rec.name!r}; "
                        "a plugin's section must be named after it"
                    )
                owner[rec.name] = plugin
                self.sections[rec.name] = rec
                model, errs = validate_section(self.settings, rec.name, rec.model)
                problems.extend(errs)
                problems.extend(self._secrets_in_files(rec))
                if model is not None:
                    self.settings.sections[rec.name] = model
                self.infos[plugin].records.setdefault("settings", []).append(rec.name)
        # Sections nobody owns: a typo, or a plugin that is not installed.
        known = set(KERNEL_SECTIONS) | set(self.infos) | set(owner)
        installed = set(installed_plugins())
        for name in self.settings.plugin_names_in_config():
            if name not in known and name not in installed:
                problems.append(
                    f"{name}: unknown section{suggest(name, sorted(known | installed))}"
                    f" [{self.settings.raw.origin((name,))}]"
                )
        if problems:
            raise ConfigError(problems)

    def _secrets_in_files(self, rec: SettingsSection) -> list[str]:
        """A problem per ``env_only`` key that a configuration file sets."""
        problems = []
        for dotted in rec.env_only:
            path = (rec.name, *dotted.split("."))
            value: Any = self.settings.raw.data
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            origin = self.settings.raw.origin(path)
            if value is not None and self.settings.raw.path is not None and not origin.startswith("env "):
                env = "CHRONOS__" + "__".join(p.upper() for p in path)
                problems.append(
                    f"{'.'.join(path)} is a secret and is set in {origin}; set it in the environment as {env}"
                    f" (or use the section's *_file option)"
                )
        return problems

    def _collect(self, ctx: PluginContext) -> None:
        owners: dict[tuple[str, str], str] = {}
        shared_scopes: dict[str, str] = {}
        for hook_name, rtype in RECORD_HOOKS.items():
            for plugin, impl in self._impls(hook_name):
                if self.infos[plugin].status != "enabled":
                    continue
                try:
                    records = self.call_register(hook_name, plugin, impl, ctx=ctx)
                    _check_types(hook_name, plugin, records, rtype)
                except PluginError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    self._fail(plugin, self.infos[plugin].obj, f"run {hook_name}", exc)
                    continue
                for rec in records:
                    key = (hook_name, rec.name)
                    if rtype is Scope and key in owners and shared_scopes.get(rec.name) == rec.description:
                        # A scope names a capability; plugins that both guard it (mail and the
                        # templates' test send) may declare it with the same description.
                        self.infos[plugin].records.setdefault("scopes", []).append(rec.name)
                        continue
                    if key in owners:
                        raise PluginError(
                            f"{rtype.__name__.lower()} {rec.name!r} is registered by both "
                            f"{owners[key]!r} and {plugin!r}"
                        )
                    owners[key] = plugin
                    if rtype is Scope:
                        shared_scopes[rec.name] = rec.description
                    self.records[hook_name].append((plugin, rec))
                    kind = hook_name.removeprefix("register_")
                    self.infos[plugin].records.setdefault(kind, []).append(rec.name)
            if hook_name == "register_resources":
                # Stages registered next may hold on to their plugin's resources.
                ctx._declared = {rec for _, rec in self.records[hook_name]}
        # Records of plugins that failed in a later hook are dropped everywhere.
        failed = {n for n, i in self.infos.items() if i.status == "failed"}
        for hook_name in self.records:
            self.records[hook_name] = [(p, r) for p, r in self.records[hook_name] if p not in failed]
        for plugin, rec in self.records["register_scopes"]:
            if rec.name in KERNEL_SCOPES:
                raise PluginError(f"plugin {plugin!r} registers scope {rec.name!r}, which the kernel already defines")
        seen: dict[type, str] = {}
        for plugin, rec in self.records["register_services"]:
            if rec.interface in seen:
                raise PluginError(
                    f"{rec.interface.__name__} is provided by both {seen[rec.interface]!r} and {plugin!r}"
                )
            seen[rec.interface] = plugin

    # -- typed accessors: (plugin name, record) in explicit order ----------------------

    def _get(self, hook_name: str) -> Owned:
        return list(self.records[hook_name])

    def routers(self) -> list[tuple[str, Router]]:
        return self._get("register_routers")

    def migrations(self) -> list[Migrations]:
        return [m for _, m in self._get("register_migrations")]

    def jobs(self) -> list[tuple[str, Job]]:
        return self._get("register_jobs")

    def cli_commands(self) -> list[tuple[str, CliCommand]]:
        return self._get("register_cli")

    def services(self) -> list[tuple[str, Service]]:
        return self._get("register_services")

    def resources(self) -> list[tuple[str, Resource[Any]]]:
        return self._get("register_resources")

    def health_checks(self) -> list[tuple[str, HealthCheck]]:
        return self._get("register_health_checks")

    def schemas(self) -> list[tuple[str, JsonSchema]]:
        return self._get("register_schemas")

    def sources(self) -> list[tuple[str, Source]]:
        return self._get("register_sources")

    def normalizers(self) -> list[tuple[str, Normalizer]]:
        return self._get("register_normalizers")

    def enrichers(self) -> list[tuple[str, Enricher]]:
        return self._get("register_enrichers")

    def sinks(self) -> list[tuple[str, Sink]]:
        return self._get("register_sinks")

    def delivery_targets(self) -> list[tuple[str, DeliveryTarget]]:
        return self._get("register_delivery_targets")

    def web_assets(self) -> list[tuple[str, WebAssets]]:
        return self._get("register_web_assets")

    def event_types(self) -> list[tuple[str, EventType]]:
        return [(p, rec) for p, rec in self._get("register_schemas") if isinstance(rec, EventType)]

    def scopes(self) -> dict[str, str]:
        out = dict(KERNEL_SCOPES)
        out.update({rec.name: rec.description for _, rec in self.records["register_scopes"]})
        return out

    # -- lifecycle --------------------------------------------------------------

    async def startup(self, ctx: PluginContext) -> None:
        timeout = self.settings.kernel.plugins.startup_timeout_seconds
        for plugin, impl in self._impls("on_startup"):
            if self.infos[plugin].status != "enabled":
                continue
            try:
                await asyncio.wait_for(_call_async(impl, ctx=ctx), timeout)
            except TimeoutError:
                raise PluginError(f"plugin {plugin!r}: on_startup did not finish within {timeout:g}s") from None
            except Exception as exc:
                raise PluginError(f"plugin {plugin!r}: on_startup failed: {type(exc).__name__}: {exc}") from exc

    async def shutdown(self, ctx: PluginContext) -> None:
        timeout = self.settings.kernel.plugins.startup_timeout_seconds
        for plugin, impl in reversed(self._impls("on_shutdown")):
            if self.infos[plugin].status != "enabled":
                continue
            try:
                await asyncio.wait_for(_call_async(impl, ctx=ctx), timeout)
            except Exception as exc:  # noqa: BLE001 - shutdown goes on for the others
                log.error("plugin_shutdown_failed", plugin=plugin, error=f"{type(exc).__name__}: {exc}")

    def describe(self) -> list[dict[str, Any]]:
        return [info.describe() for _, info in sorted(self.infos.items())]


async def _call_async(impl: Any, **kwargs: Any) -> Any:
    result = impl.function(**{a: kwargs[a] for a in impl.argnames if a in kwargs})
    if inspect.isawaitable(result):
        return await result
    return result


def _check_types(hook_name: str, plugin: str, records: list[Any], rtype: type) -> None:
    for rec in records:
        if not isinstance(rec, rtype):
            raise PluginError(
                f"plugin {plugin!r}: {hook_name} returned {type(rec).__name__}, "
                f"expected chronos.plugin.{rtype.__name__}"
            )


def _dist(target: Any) -> tuple[str | None, str | None]:
    dist = getattr(target, "dist", None)
    if dist is None:
        return (None, None)
    return (dist.metadata["Name"], dist.version)
