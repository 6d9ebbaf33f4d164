"""The planning contracts: conflicts and analytics the event list can include.

The ``events`` plugin owns ``GET /api/v1/events``; the ``planning`` plugin
knows which events conflict and the ``analytics`` plugin computes activity
breakdowns. They cooperate through these interfaces, without importing each
other: a provider registers one with ``register_services`` and the event list
asks ``ctx.has_service(ConflictIndex)`` before offering ``include=conflicts``
(or ``EventAnalytics`` for ``analytics=true``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.ext.asyncio import AsyncSession


class ConflictIndex(ABC):
    """Which stored events conflict (provided by the ``planning`` plugin)."""

    @abstractmethod
    async def conflicting_ids(self, session: AsyncSession, event_ids: Sequence[int]) -> dict[int, list[int]]:
        """For each of ``event_ids``, the ids of the events it conflicts with now, ascending
        (an empty list for an event without conflicts). One query per call, whatever the count."""

    async def refresh(self, session: AsyncSession, event_ids: Sequence[int]) -> None:  # noqa: B027 - optional
        """Re-check the conflicts of events changed outside the pipeline (a local edit moved them),
        in the caller's transaction. The default does nothing."""


class EventAnalytics(ABC):
    """Activity breakdowns over a filtered set of events (provided by the ``analytics`` plugin).

    ``where`` is a SQL condition over the public ``events`` table (its own
    columns, no alias) with ``params`` as bound parameters, as the caller's
    list query built it; ``lower``/``upper`` bound the window (``None``: open).
    """

    @abstractmethod
    async def projection(
        self,
        session: AsyncSession,
        where: str,
        params: Mapping[str, Any],
        lower: datetime | None,
        upper: datetime | None,
    ) -> dict[str, Any]:
        """``{"total", "per_calendar", "per_day", "per_tag", "busy_minutes"}`` over every match:
        counts per calendar, per UTC start day (``YYYY-MM-DD``) and per tag, and the minutes covered
        by the union of the busy, non-cancelled events clipped to the window."""
