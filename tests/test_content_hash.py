"""Content hashes: the text hashed is exactly the event's JSON dump, however it is written.

Stored hashes are compared with new ones on every sync: a different text for the same event would
make every stored event look changed (a rewrite of each and an ``event.updated`` for each).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from chronos.contracts.events import _canonical_json, _hash_payload
from chronos.plugin import CanonicalEvent, SubTask


def reference(event: CanonicalEvent) -> str:
    return json.dumps(_hash_payload(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)  # control characters, quotes, emoji…
TIMES = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def events(draw: Any) -> CanonicalEvent:
    start = draw(TIMES)
    all_day = draw(st.booleans())
    day = start.date()
    return CanonicalEvent(
        source=draw(TEXT.filter(bool)),
        calendar_id=draw(TEXT.filter(bool)),
        uid=draw(TEXT.filter(bool)),
        recurrence_id=draw(TEXT),
        title=draw(TEXT),
        description=draw(TEXT),
        location=draw(TEXT),
        start_utc=start,
        end_utc=start + draw(st.sampled_from([timedelta(0), timedelta(microseconds=7), timedelta(hours=1)])),
        all_day=all_day,
        start_date=day if all_day else draw(st.none() | st.dates()),
        end_date=day + timedelta(days=1) if all_day else None,
        timezone=draw(st.none() | st.sampled_from(["Europe/Berlin", "UTC"])),
        status=draw(st.sampled_from(["confirmed", "tentative", "cancelled"])),
        transparency=draw(st.sampled_from(["busy", "free"])),
        mode=draw(st.sampled_from([None, "free", "auto-plan"])),
        tags=draw(st.lists(TEXT, max_size=3)),
        sub_tasks=[SubTask(id=i, text=t, done=d) for i, t, d in draw(st.lists(st.tuples(TEXT, TEXT, st.booleans())))],
        metadata=draw(st.dictionaries(TEXT, JSON_VALUES, max_size=3)),
    )


@settings(max_examples=150, deadline=None)
@given(events())
def test_the_hashed_text_is_the_events_json_dump(event: CanonicalEvent) -> None:
    assert _canonical_json(event) == reference(event)
    assert event.content_hash() == hashlib.sha256(reference(event).encode()).hexdigest()


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydantic warns about the unexpected types, then dumps them
def test_values_set_after_validation_hash_as_their_dump() -> None:
    """Stages change events in place without validation: whatever they put there is hashed as dumped."""
    base = CanonicalEvent(
        source="ics",
        calendar_id="c",
        uid="u",
        start_utc=datetime(2030, 1, 1, tzinfo=UTC),
        end_utc=datetime(2030, 1, 2, tzinfo=UTC),
    )
    changes: list[dict[str, Any]] = [
        {"start_utc": datetime(2030, 1, 1, 9, tzinfo=timezone(timedelta(hours=2)))},
        {"end_utc": datetime(2030, 1, 1, 9, tzinfo=timezone(timedelta(seconds=30)))},
        {"metadata": {"at": datetime(2030, 1, 1, tzinfo=UTC), "day": date(2030, 1, 1), "n": 1.5}},
        {"tags": ("a", "b")},
        {"all_day": 1},
        {"sub_tasks": [{"id": "1", "text": "t", "done": False}]},
        {"timezone": 5},
    ]
    for change in changes:
        event = base.model_copy(update=change)
        assert _canonical_json(event) == reference(event), change
