"""Every hookspec is documented and exercised: in-process plugins implement each hook.

Tests that assert a hook's effect carry ``@pytest.mark.exercises_hook(name)``;
``test_every_hookspec_is_exercised`` scans the test sources for those marks, so a
new hook without a test (or a test naming a removed hook) fails here.
"""

from __future__ import annotations

import ast
import inspect

import pytest
import typer
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from chronos import hookspecs
from chronos.app import create_app
from chronos.host import PluginError
from chronos.plugin import (
    CliCommand,
    HealthCheck,
    HealthResult,
    Job,
    JsonSchema,
    Resource,
    Router,
    Scope,
    Service,
    SettingsSection,
    hookimpl,
    require_scope,
)
from chronos.schemas import generate_all
from chronos.settings import load_settings
from kernel_support import ROOT, make_plugin, wait_until

HOOK_NAMES = sorted(n for n, f in vars(hookspecs).items() if callable(f) and hasattr(f, "chronos_spec"))


# -- documentation and coverage ------------------------------------------------------------


def test_hookspecs_exist():
    assert {"register_settings", "register_routers", "register_jobs", "on_startup", "on_shutdown"} <= set(HOOK_NAMES)


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_hookspec_is_documented(name):
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    summary, _, body = doc.partition("\n\n")
    assert summary.strip().endswith("."), f"{name}: the docstring needs a one-sentence summary"
    assert len(body.strip()) >= 80, f"{name}: the docstring needs to say when it is called and what it returns"


def marked_hooks() -> dict[str, list[str]]:
    """hook name -> test files whose source carries ``exercises_hook(name)``."""
    roots = [
        ROOT / "tests",
        *sorted(ROOT.glob("plugins_builtin/*/tests")),
        *sorted(ROOT.glob("plugins_contrib/*/tests")),
    ]
    found: dict[str, list[str]] = {}
    for root in roots:
        for path in sorted(root.rglob("test_*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "exercises_hook":
                    for arg in node.args:
                        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                            found.setdefault(arg.value, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_hookspec_is_exercised():
    found = marked_hooks()
    missing = [h for h in HOOK_NAMES if h not in found]
    assert not missing, f"hooks without a test marked @pytest.mark.exercises_hook(...): {missing}"
    stale = sorted(set(found) - set(HOOK_NAMES))
    assert not stale, f"tests claim to exercise hooks that do not exist: {stale}"


# -- a plugin implementing the kernel's hooks ------------------------------------------------


class KitchenSettings(BaseModel):
    word: str = Field("hello", description="What the kitchen says.")


class Order(BaseModel):
    """An order as clients send it."""

    dish: str
    count: int = Field(1, ge=1)


class Greeter:
    """A contract one plugin provides and others consume through ctx.service()."""

    def greet(self, name: str) -> str:
        raise NotImplementedError


class WordGreeter(Greeter):
    def __init__(self, word: str) -> None:
        self.word = word

    def greet(self, name: str) -> str:
        return f"{self.word}, {name}"


def kitchen(record: list, *, health: str = "ok", critical: bool = False):
    router = APIRouter(prefix="/kitchen")

    @router.get("/word", dependencies=[Depends(require_scope("kitchen.read"))])
    async def word(request: Request) -> dict:
        ctx = request.app.state.chronos
        return {"word": ctx.section("kitchen").word, "greeting": ctx.service(Greeter).greet("Ada")}

    async def cook(job):
        record.append(("job", job.trigger, dict(job.args)))
        return 42

    async def check(ctx):
        return HealthResult(health, {"oven": "warm"})

    async def on_startup(ctx):
        record.append(("startup", "kitchen", ctx.section("kitchen").word))

    async def on_shutdown(ctx):
        record.append(("shutdown", "kitchen"))

    return make_plugin(
        register_settings=lambda: [SettingsSection("kitchen", KitchenSettings)],
        register_scopes=lambda ctx: [Scope("kitchen.read", "Read the kitchen")],
        register_routers=lambda ctx: [Router("kitchen", router)],
        register_jobs=lambda ctx: [Job("kitchen.cook", cook, description="Cook something")],
        register_services=lambda ctx: [Service("greeter", Greeter, lambda c: WordGreeter(c.section("kitchen").word))],
        register_health_checks=lambda ctx: [HealthCheck("kitchen.oven", check, critical=critical)],
        register_schemas=lambda ctx: [JsonSchema("kitchen-order", Order)],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )


def diner(record: list):
    async def on_startup(ctx):
        record.append(("startup", "diner", ctx.service(Greeter).greet("diner")))

    async def on_shutdown(ctx):
        record.append(("shutdown", "diner"))

    return make_plugin(on_startup=on_startup, on_shutdown=on_shutdown)


@pytest.mark.exercises_hook("register_settings", "register_scopes", "register_routers")
async def test_settings_scopes_and_routers(chronos_app, api_client):
    async with chronos_app(plugins=[("kitchen", kitchen([]))], config={"kitchen": {"word": "Moin"}}) as app:
        cook = await api_client(app, scopes=["kitchen.read"])
        r = await cook.get("/api/v1/kitchen/word")
        assert r.status_code == 200, r.text
        assert r.json() == {"word": "Moin", "greeting": "Moin, Ada"}
        guest = await api_client(app, scopes=["events.read"])
        r = await guest.get("/api/v1/kitchen/word")
        assert r.status_code == 403 and r.json()["required_scope"] == "kitchen.read"
        admin = await api_client(app, scopes=["admin"])
        scopes = (await admin.get("/api/v1/scopes")).json()
        assert scopes["kitchen.read"] == "Read the kitchen" and "events.read" in scopes


@pytest.mark.exercises_hook("register_services", "on_startup", "on_shutdown")
async def test_services_and_lifecycle_order(chronos_app):
    record: list = []
    # Registered diner first; the host orders by name, so "kitchen" starts first.
    plugins = [("zdiner", diner(record)), ("kitchen", kitchen(record))]
    async with chronos_app(plugins=plugins, config={"kitchen": {"word": "Hej"}}) as app:
        assert app.state.chronos.service(Greeter).greet("x") == "Hej, x"
        assert record == [("startup", "kitchen", "Hej"), ("startup", "diner", "Hej, diner")]
    assert record[2:] == [("shutdown", "diner"), ("shutdown", "kitchen")]


class Counter:
    def __init__(self, ctx):
        self.word = ctx.section(KitchenSettings).word
        self.hits = 0
        self.closed = False

    async def aclose(self):
        self.closed = True


COUNTER: Resource[Counter] = Resource("kitchen.counter", Counter, close=Counter.aclose)


@pytest.mark.exercises_hook("register_resources")
async def test_resources_are_built_at_start_typed_and_closed_at_stop(chronos_app):
    plugin = make_plugin(
        register_settings=lambda: [SettingsSection("kitchen", KitchenSettings)],
        register_resources=lambda: [COUNTER],
    )
    async with chronos_app(plugins=[("kitchen", plugin)], config={"kitchen": {"word": "Hej"}}) as app:
        ctx = app.state.chronos
        counter = ctx.resource(COUNTER)
        counter.hits += 1
        assert ctx.resource(COUNTER) is counter and counter.word == "Hej" and counter.hits == 1
        other = Resource("kitchen.other", Counter)
        with pytest.raises(LookupError, match="kitchen.other"):
            ctx.resource(other)
    assert counter.closed


def test_two_plugins_cannot_register_one_resource_name():
    def provider():
        return make_plugin(register_resources=lambda: [Resource("shared.thing", Counter)])

    with pytest.raises(PluginError, match="'shared.thing' is registered by both 'one' and 'two'"):
        create_app(load_settings(None, env={}), plugins=[("one", provider()), ("two", provider())], env={})


def test_two_providers_of_one_service_stop_startup():
    def provider(name):
        return make_plugin(register_services=lambda ctx: [Service(name, Greeter, WordGreeter)])

    with pytest.raises(PluginError, match="Greeter is provided by both 'one' and 'two'"):
        create_app(load_settings(None, env={}), plugins=[("one", provider("a")), ("two", provider("b"))], env={})


@pytest.mark.exercises_hook("on_startup")
async def test_tryfirst_orders_startup_explicitly(chronos_app):
    record: list = []

    def plugin(tag, **opts):
        @hookimpl(**opts)
        async def on_startup(ctx):
            record.append(tag)

        from types import SimpleNamespace

        return SimpleNamespace(on_startup=on_startup)

    async with chronos_app(
        plugins=[("a", plugin("a", trylast=True)), ("b", plugin("b")), ("c", plugin("c", tryfirst=True))]
    ):
        assert record == ["c", "b", "a"]


@pytest.mark.exercises_hook("on_startup")
async def test_on_startup_failure_stops_startup_naming_the_plugin(chronos_app):
    async def boom(ctx):
        raise RuntimeError("cannot reach the oven")

    with pytest.raises(PluginError, match="plugin 'oven': on_startup failed: RuntimeError: cannot reach the oven"):
        async with chronos_app(plugins=[("oven", make_plugin(on_startup=boom))]):
            pass


@pytest.mark.exercises_hook("on_startup")
async def test_on_startup_timeout(chronos_app):
    import asyncio

    async def slow(ctx):
        await asyncio.sleep(30)

    with pytest.raises(PluginError, match="plugin 'slow': on_startup did not finish within 0.2s"):
        async with chronos_app(
            plugins=[("slow", make_plugin(on_startup=slow))], config={"plugins": {"startup_timeout_seconds": 0.2}}
        ):
            pass


@pytest.mark.exercises_hook("on_shutdown")
async def test_on_shutdown_failure_does_not_stop_the_others(chronos_app):
    record: list = []

    async def broken(ctx):
        raise RuntimeError("stuck")

    async def fine(ctx):
        record.append("fine")

    async with chronos_app(
        plugins=[("a_fine", make_plugin(on_shutdown=fine)), ("b_broken", make_plugin(on_shutdown=broken))]
    ):
        pass
    assert record == ["fine"]


@pytest.mark.exercises_hook("register_jobs")
async def test_registered_job_runs_on_demand_and_is_listed(chronos_app, api_client):
    record: list = []
    async with chronos_app(plugins=[("kitchen", kitchen(record))]) as app:
        task = app.state.chronos.jobs.run_now("kitchen.cook", {"dish": "soup"})
        assert await task == 42
        assert ("job", "manual", {"dish": "soup"}) in record
        admin = await api_client(app, scopes=["admin"])
        jobs = (await admin.get("/api/v1/jobs")).json()
        (job,) = [j for j in jobs if j["name"] == "kitchen.cook"]
        assert job["plugin"] == "kitchen" and job["description"] == "Cook something" and job["schedule"] is None
        assert job["last_run"]["status"] == "ok" and job["last_run"]["trigger"] == "manual"


@pytest.mark.exercises_hook("register_health_checks")
@pytest.mark.parametrize(
    ("health", "critical", "status", "code"),
    [("ok", False, "ok", 200), ("degraded", False, "degraded", 200), ("error", True, "error", 503)],
)
async def test_health_checks_become_blocks_of_health(chronos_app, api_client, health, critical, status, code):
    async with chronos_app(plugins=[("kitchen", kitchen([], health=health, critical=critical))]) as app:
        await wait_until(lambda: app.state.chronos.jobs.last_beat, what="first heartbeat")
        c = await api_client(app, scopes=["events.read", "health.read"])
        r = await c.get("/health")
        assert r.status_code == code, r.text
        body = r.json()
        assert body["status"] == status
        block = body["checks"]["kitchen.oven"]
        assert block["status"] == health and block["plugin"] == "kitchen" and block["oven"] == "warm"
        assert isinstance(block["duration_ms"], float)


@pytest.mark.exercises_hook("register_schemas")
def test_registered_schemas_are_exported():
    app = create_app(load_settings(None, env={}), plugins=[("kitchen", kitchen([]))], env={})
    out = generate_all(app.state.runtime.host)
    schema = out["kitchen-order.schema.json"]
    assert schema["properties"]["count"]["minimum"] == 1 and schema["required"] == ["dish"]
    assert schema["$schema"].startswith("https://json-schema.org/")
    # The plugin's settings section is part of the configuration schema.
    assert out["config.schema.json"]["properties"]["kitchen"]


@pytest.mark.exercises_hook("register_cli")
def test_cli_records_are_collected():
    group = typer.Typer()
    app = create_app(
        load_settings(None, env={}),
        plugins=[("kitchen", make_plugin(register_cli=lambda ctx: [CliCommand("kitchen", group, help="Kitchen")]))],
        env={},
    )
    ((plugin, rec),) = app.state.runtime.host.cli_commands()
    assert plugin == "kitchen" and rec.app is group and rec.help == "Kitchen"
