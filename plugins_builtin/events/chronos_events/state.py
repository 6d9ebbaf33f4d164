"""Process-wide resources of the events plugin (built and closed by the kernel)."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from chronos.plugin import PluginContext, Resource

from chronos_events.query import InlineReader
from chronos_events.settings import EventsSettings


def _open_inline_reader(ctx: PluginContext) -> InlineReader | None:
    path = make_url(ctx.db.url).database
    budget = ctx.section(EventsSettings).inline_read_budget_ms
    if ctx.db.is_sqlite and budget > 0 and path and path != ":memory:" and not path.startswith("file:"):
        try:
            return InlineReader(path, budget)
        except Exception:  # noqa: BLE001 - the threaded path always works
            return None
    return None


def _close_inline_reader(reader: InlineReader | None) -> None:
    if reader is not None:
        reader.close()


#: The process's inline SQLite reader (see :class:`InlineReader`); None for other databases.
INLINE_READER: Resource[InlineReader | None] = Resource(
    "events.inline_reader", _open_inline_reader, close=_close_inline_reader
)


def inline_reader(ctx: PluginContext) -> InlineReader | None:
    return ctx.resource(INLINE_READER)
