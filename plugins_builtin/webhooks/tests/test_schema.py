"""The models match the migrations, on both backends."""

from __future__ import annotations

from chronos import testing as kit

OWN_TABLES = ["webhooks_outbox", "webhooks_endpoints", "webhooks_deliveries", "webhooks_attempts", "webhooks_inbound"]


async def test_models_match_migrations(chronos_app, database):
    async with chronos_app(plugins=["webhooks"]):
        pass
    assert await kit.schema_drift(database, OWN_TABLES) == []
