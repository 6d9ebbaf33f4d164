"""The plugin host: discovery, selection, failure isolation, conflicts and introspection."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest
from fastapi import APIRouter, Depends

from chronos.app import create_app, effective_routes
from chronos.host import GROUP, PluginError, installed_plugins
from chronos.plugin import Job, Router, Scope, require_scope
from chronos.settings import ConfigError, load_settings
from chronos.testing import make_test_settings
from kernel_support import cli_json, db_config, make_plugin, write_config


def settings(**sections):
    return load_settings(None, env={}, **sections)


def host_of(app):
    return app.state.runtime.host


def describe(app, name):
    return next(p for p in host_of(app).describe() if p["name"] == name)


def paths(app):
    return {r.path for r in effective_routes(app.routes)}


def broken_entry_point(name="broken"):
    """A real entry point whose module does not exist: the plugin fails to import."""
    return (name, EntryPoint(name=name, value="chronos_module_that_is_not_installed.plugin", group=GROUP))


def router_plugin(path="/thing", scope="events.read", method="get", name="r"):
    router = APIRouter()

    async def handler() -> dict:
        return {}

    getattr(router, method)(path, dependencies=[Depends(require_scope(scope))])(handler)
    return make_plugin(register_routers=lambda: [Router(name, router)])


# -- discovery and selection -------------------------------------------------------------

# The template's API routes, and the static files of its dashboard panel (register_web_assets).
HELLO_ROUTES = [
    "GET /api/v1/hello/greetings",
    "GET /api/v1/hello/greetings/{greeting_id}",
    "GET /ui/plugins/hello/{file_path:path}",
    "POST /api/v1/hello",
]


def test_the_example_plugin_is_discovered_through_its_entry_point():
    eps = installed_plugins()
    assert "hello" in eps
    assert eps["hello"].value == "chronos_hello.plugin"
    app = create_app(settings(plugins={"enabled": ["hello"]}), env={})
    info = describe(app, "hello")
    # Every kind of record is listed, empty where the plugin contributes none.
    assert set(info["records"]) >= {"settings", "scopes", "routers", "resources", "sources", "sinks"}
    info["records"] = {kind: names for kind, names in info["records"].items() if names}
    assert info == {
        "name": "hello",
        "distribution": "chronos-hello",
        "version": "0.1.0",
        "status": "enabled",
        "error": None,
        "hooks": [
            "register_migrations",
            "register_resources",
            "register_routers",
            "register_scopes",
            "register_settings",
            "register_web_assets",
        ],
        "records": {
            "migrations": ["hello"],
            "resources": ["hello.greeter"],
            "routers": ["hello"],
            "scopes": ["hello.read", "hello.write"],
            "settings": ["hello"],
            "web_assets": ["hello"],
        },
        "routes": HELLO_ROUTES,
    }
    assert "/api/v1/hello" in paths(app)
    assert "hello.write" in app.state.chronos.scopes


def test_disabled_plugin_is_listed_but_not_loaded():
    app = create_app(settings(plugins={"enabled": ["hello"], "disabled": ["hello"]}), env={})
    info = describe(app, "hello")
    assert info["status"] == "disabled" and info["hooks"] == [] and info["routes"] == []
    assert "/api/v1/hello" not in paths(app)
    assert "hello.write" not in app.state.chronos.scopes


def test_enabled_list_is_an_allowlist():
    app = create_app(settings(plugins={"enabled": []}), env={})
    assert host_of(app).enabled() == []
    assert describe(app, "hello")["status"] == "disabled"


@pytest.mark.parametrize("key", ["enabled", "disabled"])
def test_unknown_plugin_name_is_a_config_error_with_suggestion(key):
    with pytest.raises(ConfigError) as exc:
        create_app(settings(plugins={key: ["helo"]}), env={})
    (line,) = exc.value.problems
    assert line.startswith(f"plugins.{key}: unknown plugin 'helo' (did you mean 'hello'?); installed: ")
    assert "hello" in line.split("installed: ")[1]


def test_no_plugins_env_boots_the_kernel_only():
    app = create_app(settings(), env={"CHRONOS_NO_PLUGINS": "1"})
    assert host_of(app).describe() == []
    assert "/api/v1/hello" not in paths(app)
    assert {"/health", "/api/v1/keys", "/api/v1/audit"} <= paths(app)


async def test_no_plugins_app_serves(database, api_client):
    from chronos.testing import running_app

    app = create_app(make_test_settings(database), env={"CHRONOS_NO_PLUGINS": "1"}, run_jobs=False)
    async with running_app(app):
        c = await api_client(app, scopes=["admin"])
        assert (await c.get("/api/v1/plugins")).json() == []
        assert (await c.get("/health")).json()["checks"]["database"]["status"] == "ok"


# -- failing plugins: strict and non-strict ------------------------------------------------


def test_failed_import_is_recorded_and_skipped_when_not_strict():
    good = ("good", make_plugin(register_scopes=lambda: [Scope("good.read")]))
    app = create_app(settings(plugins={"strict": False}), plugins=[broken_entry_point(), good], env={})
    info = describe(app, "broken")
    assert info["status"] == "failed"
    assert "failed to import: ModuleNotFoundError" in info["error"]
    assert host_of(app).enabled() == ["good"]
    assert "good.read" in app.state.chronos.scopes


@pytest.mark.parametrize(("strict_setting", "env"), [(True, {}), (False, {"CHRONOS_STRICT_PLUGINS": "1"})])
def test_failed_import_stops_startup_in_strict_mode(strict_setting, env):
    with pytest.raises(PluginError, match=r"plugin 'broken' failed to import: ModuleNotFoundError.*strict mode"):
        create_app(settings(plugins={"strict": strict_setting}), plugins=[broken_entry_point()], env=env)


def test_strict_env_zero_overrides_the_setting():
    app = create_app(
        settings(plugins={"strict": True}), plugins=[broken_entry_point()], env={"CHRONOS_STRICT_PLUGINS": "0"}
    )
    assert describe(app, "broken")["status"] == "failed"


def test_plugin_raising_in_a_register_hook_fails_alone():
    def explode(ctx):
        raise RuntimeError("no routers today")

    flaky = make_plugin(register_scopes=lambda: [Scope("flaky.read")], register_routers=explode)
    app = create_app(settings(), plugins=[("flaky", flaky)], env={})
    info = describe(app, "flaky")
    assert info["status"] == "failed"
    assert "run register_routers: RuntimeError: no routers today" in info["error"]
    # Records it contributed before failing are dropped too.
    assert "flaky.read" not in app.state.chronos.scopes
    assert not any(info["records"].values())
    with pytest.raises(PluginError, match="no routers today"):
        create_app(settings(plugins={"strict": True}), plugins=[("flaky", flaky)], env={})


def test_hookimpl_with_unknown_argument_fails_registration():
    odd = make_plugin(register_scopes=lambda nonsense: [])
    app = create_app(settings(), plugins=[("odd", odd)], env={})
    info = describe(app, "odd")
    assert info["status"] == "failed" and "failed to register its hooks" in info["error"]


def test_wrong_record_type_is_rejected_naming_the_plugin():
    wrong = make_plugin(register_scopes=lambda: ["events.read"])
    expected = r"plugin 'wrong': register_scopes returned str, expected chronos.plugin.Scope"
    with pytest.raises(PluginError, match=expected):
        create_app(settings(), plugins=[("wrong", wrong)], env={})


def test_invalid_plugin_name_is_refused():
    with pytest.raises(PluginError, match="plugin name 'Bad-Name' is invalid"):
        create_app(settings(), plugins=[("Bad-Name", make_plugin())], env={})


# -- conflicts name both plugins ----------------------------------------------------------------


def test_duplicate_record_names_name_both_plugins():
    a = make_plugin(register_scopes=lambda: [Scope("shared.read", "Read alpha")])
    b = make_plugin(register_scopes=lambda: [Scope("shared.read", "Read beta")])
    with pytest.raises(PluginError, match="scope 'shared.read' is registered by both 'alpha' and 'beta'"):
        create_app(settings(), plugins=[("alpha", a), ("beta", b)], env={})


def test_plugins_guarding_one_capability_may_declare_its_scope_alike():
    a = make_plugin(register_scopes=lambda: [Scope("mail.send", "Send mail")])
    b = make_plugin(register_scopes=lambda: [Scope("mail.send", "Send mail")])
    app = create_app(settings(), plugins=[("alpha", a), ("beta", b)], env={})
    assert app.state.chronos.scopes["mail.send"] == "Send mail"
    assert {p["name"]: p["records"].get("scopes") for p in app.state.runtime.host.describe()} == {
        "alpha": ["mail.send"],
        "beta": ["mail.send"],
    }


def test_duplicate_job_names_name_both_plugins():
    async def noop(job):
        return None

    a = make_plugin(register_jobs=lambda: [Job("sync.all", noop)])
    b = make_plugin(register_jobs=lambda: [Job("sync.all", noop)])
    with pytest.raises(PluginError, match="job 'sync.all' is registered by both 'alpha' and 'beta'"):
        create_app(settings(), plugins=[("beta", b), ("alpha", a)], env={})


def test_redefining_a_kernel_scope_is_refused():
    a = make_plugin(register_scopes=lambda: [Scope("admin")])
    with pytest.raises(PluginError, match="'alpha' registers scope 'admin', which the kernel already defines"):
        create_app(settings(), plugins=[("alpha", a)], env={})


def test_route_collision_names_both_plugins():
    with pytest.raises(PluginError, match=r"route GET /api/v1/thing is mounted by both 'alpha' and 'beta'"):
        create_app(settings(), plugins=[("alpha", router_plugin(name="a")), ("beta", router_plugin(name="b"))], env={})


def test_route_collision_with_the_kernel():
    with pytest.raises(PluginError, match=r"route GET /api/v1/keys is mounted by both 'kernel' and 'alpha'"):
        create_app(settings(), plugins=[("alpha", router_plugin(path="/keys"))], env={})


def test_route_without_scope_is_refused():
    router = APIRouter()

    @router.delete("/open-door")
    async def open_door() -> dict:
        return {}

    rogue = make_plugin(register_routers=lambda: [Router("rogue", router)])
    with pytest.raises(PluginError, match=r"plugin 'rogue': route \['DELETE'\] /api/v1/open-door declares no scope"):
        create_app(settings(), plugins=[("rogue", rogue)], env={})


def test_unscoped_route_in_an_included_sub_router_is_refused():
    inner = APIRouter()

    @inner.get("/secret")
    async def secret() -> dict:
        return {}

    outer = APIRouter(prefix="/outer")
    outer.include_router(inner, prefix="/inner")
    rogue = make_plugin(register_routers=lambda: [Router("rogue", outer)])
    with pytest.raises(PluginError, match=r"route \['GET'\] /api/v1/outer/inner/secret declares no scope"):
        create_app(settings(), plugins=[("rogue", rogue)], env={})

    # A scope declared where the sub-router is included covers its routes.
    outer = APIRouter(prefix="/outer")
    outer.include_router(inner, prefix="/inner", dependencies=[Depends(require_scope("events.read"))])
    fine = make_plugin(register_routers=lambda: [Router("fine", outer)])
    app = create_app(settings(), plugins=[("fine", fine)], env={})
    assert describe(app, "fine")["routes"] == ["GET /api/v1/outer/inner/secret"]


def test_plain_starlette_route_is_refused():
    router = APIRouter()

    async def raw(request):
        raise AssertionError("never mounted")

    router.add_route("/raw", raw, methods=["POST"])
    rogue = make_plugin(register_routers=lambda: [Router("rogue", router)])
    with pytest.raises(PluginError, match="route /api/v1/raw is not an API route"):
        create_app(settings(), plugins=[("rogue", rogue)], env={})


def test_route_with_unregistered_scope_is_refused():
    with pytest.raises(PluginError, match="requires unregistered scope 'ghost.read'"):
        create_app(settings(), plugins=[("alpha", router_plugin(scope="ghost.read"))], env={})


# -- introspection: one function for the CLI and the API ---------------------------------------------


@pytest.mark.backends("sqlite")  # the description does not depend on the backend
async def test_cli_and_api_describe_plugins_identically(database, chronos_app, api_client, tmp_path):
    config = {"plugins": {"enabled": ["hello"], "disabled": []}}
    cfg = write_config(tmp_path / "c.yaml", db_config(database, **config))
    from_cli = cli_json("plugins", "--json", config=cfg)
    async with chronos_app(plugins=None, config=config) as app:
        c = await api_client(app, scopes=["admin"])
        r = await c.get("/api/v1/plugins")
        assert r.status_code == 200
        assert r.json() == from_cli
        assert [p["name"] for p in from_cli if p["status"] == "enabled"] == ["hello"]
        assert from_cli[[p["name"] for p in from_cli].index("hello")]["routes"] == HELLO_ROUTES
        # The listing is admin-only.
        other = await api_client(app, scopes=["events.read"])
        assert (await other.get("/api/v1/plugins")).status_code == 403


CLIDEMO = '''
import typer
from chronos.plugin import CliCommand, hookimpl

cli = typer.Typer(help="A demo group")


@cli.command()
def hello(name: str = typer.Option(...)):
    """Greet from a plugin command."""
    typer.echo(f"hello {name} from clidemo")


@hookimpl
def register_cli(ctx):
    return [CliCommand("clidemo", cli, help="Demo commands")]
'''


@pytest.mark.exercises_hook("register_cli")
def test_installed_distributions_are_discovered_and_can_fail_alone(tmp_path, monkeypatch):
    """Real entry points from an installed distribution: one good plugin with a CLI group, one broken."""
    from kernel_support import fake_distribution, run_cli

    site = fake_distribution(
        tmp_path / "site",
        "chronos-demo-plugins",
        {"clidemo": "clidemo_plugin", "brokendemo": "brokendemo_plugin"},
        {"clidemo_plugin": CLIDEMO, "brokendemo_plugin": "raise ImportError('missing native library')\n"},
    )
    env = {"PYTHONPATH": str(site)}
    cfg = write_config(tmp_path / "c.yaml", {"plugins": {"enabled": ["clidemo", "brokendemo"]}})
    rows = {r["name"]: r for r in cli_json("plugins", "--json", config=cfg, env=env)}
    assert rows["clidemo"]["status"] == "enabled"
    assert rows["clidemo"]["distribution"] == "chronos-demo-plugins" and rows["clidemo"]["version"] == "0.0.1"
    assert rows["clidemo"]["hooks"] == ["register_cli"] and {
        k: v for k, v in rows["clidemo"]["records"].items() if v
    } == {"cli": ["clidemo"]}
    assert rows["brokendemo"]["status"] == "failed"
    assert "failed to import: ImportError: missing native library" in rows["brokendemo"]["error"]
    assert rows["hello"]["status"] == "disabled"

    res = run_cli("--config", str(cfg), "clidemo", "hello", "--name", "Ada", env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "hello Ada from clidemo"

    # Strict mode, in this process with the same distribution on sys.path.
    from kernel_support import invoke_cli

    monkeypatch.syspath_prepend(str(site))
    res = invoke_cli("plugins", config=cfg, env={"CHRONOS_STRICT_PLUGINS": "1"})
    assert res.returncode == 2
    assert "plugin 'brokendemo' failed to import: ImportError: missing native library" in res.stderr
