"""Web assets (the dashboard and plugin panels): where they are served, with which headers, and what they refuse."""

from __future__ import annotations

import pytest

from chronos.app import create_app
from chronos.host import PluginError
from chronos.plugin import WebAssets
from chronos.settings import load_settings
from chronos.testing import client
from kernel_support import is_problem, make_plugin

#: A panel a third party could ship: the dashboard's own js directory stands in for its files.
PANEL = ("panelplug", make_plugin(register_web_assets=lambda: [WebAssets("panelplug", "chronos_web", "static/js")]))


def assert_ui_headers(r) -> None:
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.exercises_hook("register_web_assets")
async def test_the_dashboard_is_home_and_served_with_strict_headers(chronos_app, api_client):
    async with chronos_app(plugins=["web", PANEL]) as app, client(app) as c:
        r = await c.get("/", follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"] == "/ui/"
        page = await c.get("/ui/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert_ui_headers(page)
        assert 'type="module" src="js/app.js"' in page.text and "<script>" not in page.text
        script = await c.get("/ui/js/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert_ui_headers(script)
        assert (await c.head("/ui/css/app.css")).status_code == 200
        # A plugin's panel files live under /ui/plugins/<name>/; the records show in GET /api/v1/plugins.
        panel = await c.get("/ui/plugins/panelplug/app.js")
        assert panel.status_code == 200 and panel.text == script.text
        assert_ui_headers(panel)
        listed = (await (await api_client(app, scopes=["admin"])).get("/api/v1/plugins")).json()
        assert {p["name"]: p["records"]["web_assets"] for p in listed} == {"web": ["web"], "panelplug": ["panelplug"]}
        assert "GET /ui/plugins/panelplug/{file_path:path}" in {r for p in listed for r in p["routes"]}


async def test_any_caller_learns_which_plugins_contribute_a_panel_and_nothing_else(chronos_app, api_client):
    """GET /api/v1/dashboard/panels: the directories holding a panel.js, for keys that may not list plugins."""
    async with chronos_app(plugins=["web", "hello", PANEL]) as app, client(app) as c:
        expected = [{"name": "hello", "module": "/ui/plugins/hello/panel.js"}]  # panelplug serves files, no panel
        reader = await api_client(app, scopes=["events.read"])
        assert (await reader.get("/api/v1/plugins")).status_code == 403
        assert (await reader.get("/api/v1/dashboard/panels")).json() == expected
        assert (await c.get("/api/v1/dashboard/panels")).json() == expected  # public files: no key needed
        module = await c.get(expected[0]["module"])
        assert module.status_code == 200 and "export const probe" in module.text


async def test_web_assets_refuse_paths_outside_their_directory(chronos_app):
    async with chronos_app(plugins=["web"]) as app, client(app) as c:
        for path in (
            "/ui/../pyproject.toml",
            "/ui/%2e%2e/plugin.py",
            "/ui/.hidden",
            "/ui/js/../../plugin.py",
            "/ui/nope.js",
        ):
            r = await c.get(path)
            assert r.status_code == 404, path
            is_problem(r, 404)
        assert (await c.get("/ui/plugin.py")).status_code == 404  # the package itself is not under static/


def test_two_homes_or_one_path_twice_stop_startup():
    def assets(**kw):
        return make_plugin(register_web_assets=lambda: [WebAssets(kw.pop("name"), "chronos_web", **kw)])

    settings = load_settings(None, env={})
    with pytest.raises(PluginError, match="both 'one' and 'two' ask to be the home page"):
        create_app(
            settings,
            plugins=[
                ("one", assets(name="a", path="/a/", home=True)),
                ("two", assets(name="b", path="/b/", home=True)),
            ],
            env={},
        )
    with pytest.raises(PluginError, match="path /same/ is served by both 'one' and 'two'"):
        create_app(
            settings,
            plugins=[("one", assets(name="a", path="/same/")), ("two", assets(name="b", path="/same/"))],
            env={},
        )


@pytest.mark.parametrize("path", ["/api/ui/", "/docs/x/", "ui/", "/ui", "/UI/", "/ui/../", "/health/"])
def test_web_assets_paths_stay_out_of_the_kernels(path):
    with pytest.raises(ValueError, match="must look like"):
        WebAssets("x", "chronos_web", path=path)
