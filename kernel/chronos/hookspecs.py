"""Hook specifications: the reference for plugin authors.

Every hook is documented here and nowhere else. Two kinds exist:

* ``register_*`` hooks are synchronous, called once at startup (in a fixed
  order: settings first, then everything else) and return a list of typed
  records from :mod:`chronos.plugin`. Returning ``None`` or ``[]`` contributes
  nothing. Record names are unique per kind across all plugins.
* ``on_startup`` / ``on_shutdown`` are ``async`` lifecycle hooks. The kernel
  awaits each plugin's implementation on its own, with a timeout; a plugin that
  raises in ``on_startup`` stops startup with its name in the message.

An implementation may accept any subset of a hook's arguments, by name.
Per-item work never goes through pluggy: records carry the objects the kernel
calls in batches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from chronos.context import PluginContext
    from chronos.contracts.events import Enricher, Normalizer, Sink, Source
    from chronos.contracts.outbox import DeliveryTarget
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

hookspec = pluggy.HookspecMarker("chronos")


@hookspec
def register_settings() -> list[SettingsSection] | None:
    """Declare the plugin's configuration section.

    Called first, before any other hook, so the section can be validated and
    handed to the other hooks, typed, through ``ctx.section(HelloSettings)``. The section name
    must equal the plugin's name and must not collide with a kernel section
    (``server``, ``database``, ``auth``, ``scheduler``, ``plugins``,
    ``logging``). Invalid values abort startup with one line per problem.

    Example::

        class HelloSettings(BaseModel):
            greeting: str = "hello"

        @hookimpl
        def register_settings():
            return [SettingsSection("hello", HelloSettings)]
    """


@hookspec
def register_scopes(ctx: PluginContext) -> list[Scope] | None:
    """Declare authorisation scopes the plugin's routes use.

    The kernel's own scopes (``events.read``, ``events.write``, ``admin``)
    always exist; every other scope exists while a plugin registers it. Keys
    can be created with any registered scope; a route requiring an
    unregistered scope stops startup. Two plugins guarding one capability may
    both declare its scope with the same description (any other duplicate
    stops startup).

    Example: ``return [Scope("hello.read", "Read greetings")]``
    """


@hookspec
def register_routers(ctx: PluginContext) -> list[Router] | None:
    """Contribute FastAPI routers, mounted under ``/api/v1``.

    Every route must depend on ``require_scope(<scope>)``; a route without a
    scope, or a (method, path) pair another plugin already mounted, stops
    startup naming both plugins. A route parses, authorises, calls one service
    function and shapes the answer; it receives the plugin context as
    ``ctx: Context``. Services raise the domain errors of
    :mod:`chronos.plugin` (``NotFound``, ``InvalidInput``, ``Conflict`` …)
    and routes may raise ``Problem``: clients get ``application/problem+json``.

    Example::

        router = APIRouter()

        @router.get("/hello/{id}", dependencies=[Depends(require_scope("hello.read"))])
        async def get_greeting(id: int, ctx: Context) -> GreetingOut:
            return await service.get_greeting(ctx, id)

        @hookimpl
        def register_routers(ctx):
            return [Router("hello", router)]
    """


@hookspec
def register_migrations(ctx: PluginContext) -> list[Migrations] | None:
    """Declare the alembic revisions of the plugin's own tables.

    Revisions live in ``<package>/migrations/versions/`` and are tracked in the
    version table ``alembic_version_<name>``. The kernel migrates itself first,
    then each enabled plugin in ``requires`` order, all in one transaction.
    Models subclass :class:`chronos.plugin.Base` so foreign keys to kernel and
    other plugins' tables resolve. Disabling the plugin leaves its tables and
    version table untouched.

    Example: ``return [Migrations("hello", "chronos_hello")]``
    """


@hookspec
def register_jobs(ctx: PluginContext) -> list[Job] | None:
    """Contribute background jobs to the kernel's job runner.

    Scheduled jobs run only on the leader replica (PostgreSQL advisory lock) and
    never overlap themselves; every job can also be run on demand through
    ``ctx.jobs.run_now(name)``. Jobs must stop promptly on cancellation.

    Example: ``return [Job("hello.tick", tick, interval_seconds=60, jitter_seconds=5)]``
    """


@hookspec
def register_cli(ctx: PluginContext) -> list[CliCommand] | None:
    """Add sub-command groups (or single commands) to the ``chronos`` command line.

    ``ctx`` carries validated settings but no running database or jobs: CLI
    commands open what they need themselves (``ctx.db`` is created lazily;
    ``ctx.migrate()`` brings a database to head).

    Example: ``return [CliCommand("hello", typer_app, help="Greetings")]``, or
    ``CliCommand("greet", command=greet)`` for ``chronos greet NAME``.
    """


@hookspec
def register_services(ctx: PluginContext) -> list[Service] | None:
    """Provide the implementation of a kernel contract for other plugins.

    Plugins never import each other; when one needs another's capability (the
    event store, the outbox) the kernel defines the interface in
    :mod:`chronos.plugin`, one plugin provides it here, and the others call
    ``ctx.service(Interface)`` at startup or later. Two providers of one
    interface stop startup. The kernel builds every service once when the
    runtime starts, before resources, the pipeline and ``on_startup``.

    Example::

        @hookimpl
        def register_services():
            return [Service("events.store", EventStore, SqlEventStore)]
    """


@hookspec
def register_resources(ctx: PluginContext) -> list[Resource[Any]] | None:
    """Declare the plugin's own per-app objects (queues, caches, senders).

    The kernel creates each with ``factory(ctx)`` when the runtime starts and
    closes it (``close``, awaited) when it stops, in reverse order; the plugin
    reaches it with ``ctx.resource(RECORD)``, typed. Use this instead of
    module globals or hand-made lazy attributes: one app, one object, closed
    on shutdown, and invisible to other plugins.

    Example::

        SENDER: Resource[MailSender] = Resource("mail.sender", MailSender, close=MailSender.aclose)

        @hookimpl
        def register_resources():
            return [SENDER]

        # in a route, job or service
        ctx.resource(SENDER).kick()
    """


@hookspec
def register_sources(ctx: PluginContext) -> list[Source] | None:
    """Contribute calendar sources to the sync pipeline.

    Return instances of :class:`chronos.plugin.Source` subclasses; ``name`` is
    the source's id in runs, events and ``POST /api/v1/events/sync``. Each
    calendar from ``source.calendars()`` syncs on its ``interval_seconds``
    through the job runner, never twice at once. See the ``Source`` docstring
    for how ICS (ETag), Google (sync tokens) and CalDAV (sync-collection,
    ctag) map onto cursors, pagination and tombstones.

    Example::

        class TeamIcs(Source):
            name = "team"
            def calendars(self): return [CalendarSpec("team", interval_seconds=600)]
            async def fetch(self, calendar, cursor):
                yield SourceBatch(drafts=[...], full=True, complete=True)

        @hookimpl
        def register_sources(ctx):
            return [TeamIcs()]
    """


@hookspec
def register_normalizers(ctx: PluginContext) -> list[Normalizer] | None:
    """Contribute normalisers: draft → canonical-ready (UTC, exclusive end…).

    They run in ascending ``order`` on every batch of every source, mutating
    :class:`chronos.plugin.EventDraft` objects in place.

    Example: ``return [StripWhitespace()]`` with ``order = 50``.
    """


@hookspec
def register_enrichers(ctx: PluginContext) -> list[Enricher] | None:
    """Contribute enrichers: add tags, sub-tasks, labels, metadata to events.

    They run in ascending ``order`` on canonical events inside the batch's
    write transaction. An enricher that raises fails only the items it
    touched; the run reports them.

    Example: ``return [KeywordLabeler(rules)]``
    """


@hookspec
def register_sinks(ctx: PluginContext) -> list[Sink] | None:
    """Contribute sinks: act on stored changes (queue commands, emit webhooks).

    A sink's writes commit with the batch; if it raises, the batch is replayed
    item by item and the failing items are neither stored nor lost (they come
    again on the next sync).

    Example: ``return [CommandSink()]`` with ``order = 100``.
    """


@hookspec
def register_delivery_targets(ctx: PluginContext) -> list[DeliveryTarget] | None:
    """Contribute outbox delivery targets: chat channels, automation hooks.

    Return instances of :class:`chronos.plugin.DeliveryTarget` subclasses;
    ``name`` names the target in deliveries, metrics and dead letters. The
    outbox (the ``webhooks`` plugin) fans every published message out to each
    target whose ``accepts(event_type)`` is true and calls ``deliver`` from its
    dispatcher job, with the outbox's retries and dead letters. Targets are
    ignored when no plugin provides :class:`chronos.plugin.Outbox`.

    Example::

        class SlackTarget(DeliveryTarget):
            name = "slack"
            event_types = ("command.*",)
            async def deliver(self, delivery): ...

        @hookimpl
        def register_delivery_targets(ctx):
            return [SlackTarget(ctx)]
    """


@hookspec
def register_health_checks(ctx: PluginContext) -> list[HealthCheck] | None:
    """Add blocks to ``GET /health``.

    Each check is awaited with a two-second timeout and timed. Return
    ``HealthResult("degraded", {...})`` for a problem users should see (a
    source failing to sync) and ``"error"`` on a ``critical`` check only when
    the service cannot do its job; that turns the response into a 503.

    Example::

        async def smtp_reachable(ctx):
            return HealthResult("ok", {"host": ctx.section(MailSettings).smtp.host})

        @hookimpl
        def register_health_checks(ctx):
            return [HealthCheck("mail.smtp", smtp_reachable)]
    """


@hookspec
def register_schemas(ctx: PluginContext) -> list[JsonSchema] | None:
    """Publish JSON Schemas of payloads clients and plugins exchange.

    ``chronos schemas export`` writes each as ``schemas/<name>.schema.json``;
    a test fails when a committed file differs from what the models generate.

    Example: ``return [JsonSchema("event", EventOut)]``

    Return :class:`chronos.plugin.EventType` records (a ``JsonSchema`` whose
    name is an event type) to declare the event types a plugin publishes
    through the outbox.
    """


@hookspec
def register_web_assets(ctx: PluginContext) -> list[WebAssets] | None:
    """Serve browser files: the dashboard itself, or a panel a plugin adds to it.

    Called once at startup. The kernel serves each record's directory at
    ``/ui/plugins/<name>/`` (or its ``path``) without a key and with strict
    security headers; the files must hold no data (the browser reads data from
    the API with the user's key). A directory with a ``panel.js`` ES module is a
    dashboard panel: the ``web`` plugin lists them (``ctx.web_assets``) at
    ``GET /api/v1/dashboard/panels`` for any signed-in user and imports each
    panel; a panel's ``probe`` route hides it from keys without its scope (the
    contract is in web/README.md).

    Example::

        @hookimpl
        def register_web_assets():
            return [WebAssets("hello", "chronos_hello", "static")]  # chronos_hello/static/panel.js
    """


@hookspec
async def on_startup(ctx: PluginContext) -> None:
    """Start the plugin: open clients, warm caches, check reachability.

    Awaited once per plugin after migrations and before the app serves
    requests, in plugin order, with the timeout ``plugins.startup_timeout``.
    Raising stops startup with the plugin's name and the error.
    """


@hookspec
async def on_shutdown(ctx: PluginContext) -> None:
    """Stop the plugin: close clients, flush buffers.

    Awaited once per plugin in reverse order after the job runner has stopped.
    Errors are logged and do not stop other plugins from shutting down.
    """
