"""The caldav tables: migrations match the models, and the downgrade removes them."""

from __future__ import annotations

import pytest

from chronos import testing as kit

pytestmark = pytest.mark.exercises_hook("register_migrations")

OWN_TABLES = {"caldav_objects", "caldav_calendars"}


async def test_models_match_migrations(chronos_app, database):
    async with chronos_app(plugins=["events", "caldav"]):
        pass
    assert await kit.schema_drift(database, OWN_TABLES) == []
