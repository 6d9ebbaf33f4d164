"""The outbox contract: event types and delivery targets reach the plugin context; filters match as documented."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from chronos.app import create_app
from chronos.host import PluginError
from chronos.plugin import DeliveryResult, DeliveryTarget, EventType, JsonSchema, type_matches
from chronos.schemas import generate_all
from chronos.settings import load_settings
from kernel_support import make_plugin


class Pinged(BaseModel):
    at: str


class Pager(DeliveryTarget):
    name = "pager"
    event_types = ("kitchen.*", "sync.failed")

    async def deliver(self, delivery):
        return DeliveryResult.delivered(200)


def _app(*plugins):
    return create_app(load_settings(None, env={}), plugins=list(plugins), env={})


@pytest.mark.exercises_hook("register_delivery_targets")
def test_delivery_targets_and_event_types_reach_the_context():
    plugin = make_plugin(
        register_delivery_targets=lambda ctx: [Pager()],
        register_schemas=lambda ctx: [EventType("kitchen.pinged", Pinged, "A ping"), JsonSchema("kitchen-x", Pinged)],
    )
    app = _app(("kitchen", plugin))
    ctx = app.state.runtime.ctx
    assert list(ctx.delivery_targets) == ["pager"] and isinstance(ctx.delivery_targets["pager"], Pager)
    assert list(ctx.event_types) == ["kitchen.pinged"]  # a plain JsonSchema is no event type
    assert ctx.event_types["kitchen.pinged"].description == "A ping"
    # An event type's payload schema is exported like any other schema.
    assert generate_all(app.state.runtime.host)["kitchen.pinged.schema.json"]["required"] == ["at"]
    target = ctx.delivery_targets["pager"]
    assert target.accepts("kitchen.pinged") and target.accepts("sync.failed")
    assert not target.accepts("kitchenette.pinged") and not target.accepts("sync.failed.more")


def test_two_targets_with_one_name_stop_startup_naming_both():
    one = make_plugin(register_delivery_targets=lambda ctx: [Pager()])
    two = make_plugin(register_delivery_targets=lambda ctx: [Pager()])
    with pytest.raises(PluginError, match="'one'.*'two'"):
        _app(("one", one), ("two", two))


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("*", "command.failed", True),
        ("command.*", "command.failed", True),
        ("command.*", "command", False),
        ("command.*", "commands.failed", False),
        ("command.failed", "command.failed", True),
        ("command.failed", "command.failed2", False),
        ("command", "command.failed", False),
    ],
)
def test_type_filters(pattern, event_type, expected):
    assert type_matches(pattern, event_type) is expected
