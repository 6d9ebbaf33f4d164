"""``GET /api/v1/dashboard/panels``: which plugins contribute a dashboard panel.

Any signed-in key may need its panels, but ``GET /api/v1/plugins`` (settings,
routes, versions) is for admins. This list names only what the browser could
fetch anyway: the public ``panel.js`` files under ``/ui/plugins/<name>/``. Each
panel checks its own scopes with its ``probe`` route, which answers 403 to a
key that may not use it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from chronos.plugin import Context, Public

router = APIRouter(tags=["dashboard"])
PANEL_FILE = "panel.js"


class Panel(BaseModel):
    name: str = Field(description="The WebAssets record's name; the panel's id in the dashboard is plugin-<name>.")
    module: str = Field(description="URL of the panel's ES module, e.g. /ui/plugins/hello/panel.js.")


@router.get(
    "/dashboard/panels",
    response_model=list[Panel],
    dependencies=[Depends(Public("names public panel files only; each panel probes its own scopes"))],
)
async def list_panels(ctx: Context) -> list[dict[str, Any]]:
    """The panels enabled plugins contribute (a ``WebAssets`` directory holding ``panel.js``), by name."""
    return [
        {"name": name, "module": rec.url_path + PANEL_FILE}
        for name, rec in sorted(ctx.web_assets.items())
        if (rec.root / PANEL_FILE).is_file()
    ]
