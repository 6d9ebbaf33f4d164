"""API documentation works offline: /docs and /redoc load only assets the service serves itself."""

from __future__ import annotations

import re

from chronos.testing import client
from kernel_support import is_problem

REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']|spec-url=["']([^"']+)["']""")


def references(html: str) -> list[str]:
    return [next(g for g in m.groups() if g) for m in REFERENCE.finditer(html)]


async def test_root_points_a_person_to_the_docs(chronos_app):
    async with chronos_app(plugins=[]) as app, client(app) as c:
        r = await c.get("/", follow_redirects=False)
        assert r.status_code in (302, 307) and r.headers["location"] == "/docs"
        assert (await c.get("/", follow_redirects=True)).status_code == 200


async def test_docs_pages_reference_no_external_host_and_their_assets_are_served(chronos_app):
    async with chronos_app(plugins=[]) as app, client(app) as c:
        for page, wanted in (("/docs", {".js", ".css"}), ("/redoc", {".js"})):
            r = await c.get(page)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert "http://" not in r.text and "https://" not in r.text, f"{page} names an external host"
            refs = references(r.text)
            assert "/openapi.json" in refs, refs
            assert {ref[ref.rfind(".") :] for ref in refs} >= wanted, refs
            for ref in refs:
                assert ref.startswith("/") and not ref.startswith("//"), ref
                asset = await c.get(ref)
                assert asset.status_code == 200, ref
                if ref.endswith(".js"):
                    assert "javascript" in asset.headers["content-type"] and len(asset.content) > 100_000
                elif ref.endswith(".css"):
                    assert asset.headers["content-type"].startswith("text/css")
        # Swagger UI would send the document to a public validator unless told not to.
        assert '"validatorUrl": null' in (await c.get("/docs")).text
        assert (await c.get("/docs/oauth2-redirect")).status_code == 200
        is_problem(await c.get("/docs/assets/secrets.txt"), 404)
        is_problem(await c.get("/docs/assets/..%2Fpyproject.toml"), 404)


async def test_docs_routes_stay_out_of_the_openapi_document(chronos_app):
    async with chronos_app(plugins=[]) as app, client(app) as c:
        paths = (await c.get("/openapi.json")).json()["paths"]
        assert not [p for p in paths if p == "/" or p.startswith(("/docs", "/redoc"))]
