"""The ``web`` plugin: hook implementations only."""

from __future__ import annotations

from chronos.plugin import Router, WebAssets, hookimpl

from chronos_web import panels


@hookimpl
def register_web_assets():
    # The dashboard is static files only: every byte of data comes from the API,
    # fetched by the browser with the key the user signed in with.
    return [WebAssets("web", "chronos_web", "static", path="/ui/", home=True)]


@hookimpl
def register_routers():
    return [Router("web", panels.router)]
