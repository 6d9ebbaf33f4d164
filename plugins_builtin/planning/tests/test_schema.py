"""The planning tables: migrations match the models."""

from __future__ import annotations

from chronos import testing as kit
from planning_support import PLUGINS, config


async def test_models_match_migrations(chronos_app, database):
    async with chronos_app(plugins=PLUGINS, config=config()):
        pass
    assert (
        await kit.schema_drift(database, {"planning_pairs", "planning_spans", "planning_planned", "planning_published"})
        == []
    )
