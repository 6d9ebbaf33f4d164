"""The query string of ``GET /api/v1/events``, parsed by hand.

The list route is the hot path, and FastAPI's per-parameter validation cost
more than the query on a small machine. Errors keep the usual 422 shape with
a pointer per parameter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from chronos.plugin import InvalidInput

from chronos_events.query import Direction, EventQuery

_TRUE = {"true", "1", "yes", "on", "t", "y"}
_FALSE = {"false", "0", "no", "off", "f", "n"}
_DIRECTIONS = ("future", "past", "all")


class _Params:
    """Reads single parameters of a query string, collecting one error per bad value."""

    def __init__(self, params: Any) -> None:
        self.params = params
        self.errors: list[dict[str, Any]] = []

    def err(self, name: str, detail: str, kind: str = "value_error") -> None:
        self.errors.append({"pointer": f"/query/{name}", "location": "query", "detail": detail, "type": kind})

    def instant(self, name: str) -> datetime | None:
        raw = self.params.get(name)
        if raw is None:
            return None
        try:
            value = datetime.fromisoformat(raw.strip())
        except ValueError:
            self.err(name, "not an ISO 8601 date-time (e.g. 2030-03-04T09:00:00Z)", "datetime_parsing")
            return None
        if value.tzinfo is None:
            self.err(name, "needs a UTC offset or Z (e.g. 2030-03-04T09:00:00+01:00)", "timezone_aware")
            return None
        try:
            value.astimezone(UTC)
        except OverflowError:
            self.err(name, "out of range: in UTC it must fall in the years 1 to 9999")
            return None
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.params.get(name)
        if raw is None:
            return default
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        self.err(name, "not a boolean (true or false)", "bool_parsing")
        return default

    def many(self, name: str, most: int) -> list[str]:
        values: list[str] = self.params.getlist(name)
        if len(values) > most:
            self.err(name, f"at most {most} values")
        for i, v in enumerate(values):
            if not 1 <= len(v) <= 200:
                self.errors.append(
                    {
                        "pointer": f"/query/{name}/{i}",
                        "location": "query",
                        "detail": "must be 1 to 200 characters",
                        "type": "string_too_long",
                    }
                )
        return values

    def short(self, name: str, most: int) -> str | None:
        value: str | None = self.params.get(name)
        if value is not None and len(value) > most:
            self.err(name, f"at most {most} characters", "string_too_long")
        return value

    def direction(self) -> Direction | None:
        value = self.params.get("direction")
        if value is not None and value not in _DIRECTIONS:
            self.err("direction", "must be one of future, past, all", "literal_error")
            return None
        return cast("Direction | None", value)

    def limit(self) -> int:
        raw = self.params.get("limit")
        if raw is None:
            return 50
        try:
            limit = int(raw)
        except ValueError:
            self.err("limit", "not an integer", "int_parsing")
            return 50
        if not 1 <= limit <= 500:
            self.err("limit", "must be between 1 and 500", "less_than_equal" if limit > 500 else "greater_than_equal")
        return limit

    def raise_if_invalid(self) -> None:
        if self.errors:
            summary = "; ".join(f"{e['pointer']}: {e['detail']}" for e in self.errors[:5])
            raise InvalidInput(f"The request is invalid: {summary}", type="validation", errors=self.errors)


def parse_list_query(params: Any, now: datetime | None = None) -> tuple[EventQuery, bool]:
    """Validate the query string of ``GET /api/v1/events`` (422 with pointers on errors)."""
    p = _Params(params)
    start, end = p.instant("from"), p.instant("to")
    calendars = p.many("calendar_id", 100)
    tags = p.many("tag", 20)
    direction = p.direction()
    text = p.short("text", 500)
    limit = p.limit()
    cursor = p.short("cursor", 2048)
    include_completed = p.flag("include_completed", True)
    analytics = p.flag("analytics", False)
    p.raise_if_invalid()
    q = EventQuery(
        start=start,
        end=end,
        calendars=calendars,
        direction=direction,
        text=text,
        include_completed=include_completed,
        tags=tags,
        limit=limit,
        cursor=cursor,
        **({"now": now} if now else {}),
    )
    return q, analytics
