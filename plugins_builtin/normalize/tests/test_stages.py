"""The normalisers and enrichers, one behaviour at a time (no database needed)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from chronos.plugin import CanonicalEvent, EventDraft

from chronos_normalize.settings import LabelRule, NormalizeSettings
from chronos_normalize.stages import (
    ChecklistEnricher,
    HashtagEnricher,
    LabelEnricher,
    TextNormalizer,
    TimeNormalizer,
    hashtags,
    parse_checklist,
)

NY = ZoneInfo("America/New_York")


def times(**settings) -> TimeNormalizer:
    return TimeNormalizer(NormalizeSettings(**settings))


async def normalized(d: EventDraft, **settings) -> CanonicalEvent:
    d.source, d.calendar_id = "test", "cal"
    await times(**settings).normalize([d], None)
    await TextNormalizer().normalize([d], None)
    return CanonicalEvent.from_draft(d)


async def test_naive_times_take_the_entry_zone_and_become_utc():
    e = await normalized(
        EventDraft(uid="a", start=datetime(2026, 11, 2, 9), end=datetime(2026, 11, 2, 10), timezone="America/New_York")
    )
    assert e.start_utc == datetime(2026, 11, 2, 14, tzinfo=UTC)  # EST, after the November change
    assert e.end_utc == datetime(2026, 11, 2, 15, tzinfo=UTC)
    assert e.timezone == "America/New_York" and not e.all_day


async def test_aware_times_keep_their_zone_name():
    e = await normalized(
        EventDraft(uid="a", start=datetime(2026, 10, 26, 9, tzinfo=NY), end=datetime(2026, 10, 26, 9, 30, tzinfo=NY))
    )
    assert e.start_utc == datetime(2026, 10, 26, 13, tzinfo=UTC)  # EDT
    assert e.timezone == "America/New_York"


async def test_floating_times_use_the_default_zone():
    e = await normalized(
        EventDraft(uid="a", start=datetime(2026, 7, 1, 9), end=datetime(2026, 7, 1, 10)),
        default_timezone="Europe/Berlin",
    )
    assert e.start_utc == datetime(2026, 7, 1, 7, tzinfo=UTC) and e.timezone == "Europe/Berlin"


async def test_missing_ends_use_duration_or_the_default_length():
    start = datetime(2026, 3, 2, 9, tzinfo=UTC)
    e = await normalized(EventDraft(uid="a", start=start, duration=timedelta(minutes=45)))
    assert e.end_utc - e.start_utc == timedelta(minutes=45)
    e = await normalized(EventDraft(uid="b", start=start), default_duration_minutes=25)
    assert e.end_utc - e.start_utc == timedelta(minutes=25)


async def test_all_day_entries_become_dates_with_an_exclusive_end():
    e = await normalized(EventDraft(uid="a", start=date(2026, 3, 2)))
    assert e.all_day and (e.start_date, e.end_date) == (date(2026, 3, 2), date(2026, 3, 3))
    assert (e.start_utc, e.end_utc) == (datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    # An inclusive end (same day) means that one day.
    e = await normalized(EventDraft(uid="b", start=date(2026, 3, 2), end=date(2026, 3, 2)))
    assert e.end_date == date(2026, 3, 3)
    # Three days by duration.
    e = await normalized(EventDraft(uid="c", start=date(2026, 3, 2), duration=timedelta(days=3)))
    assert e.end_date == date(2026, 3, 5)


async def test_all_day_flag_turns_local_midnights_into_dates():
    e = await normalized(
        EventDraft(
            uid="a",
            start=datetime(2026, 3, 2, 0, tzinfo=NY),
            end=datetime(2026, 3, 4, 0, tzinfo=NY),
            metadata={"all_day": True},
        )
    )
    assert e.all_day and (e.start_date, e.end_date) == (date(2026, 3, 2), date(2026, 3, 4))


async def test_unknown_zones_fail_clearly():
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        await times().normalize([EventDraft(uid="a", start=datetime(2026, 1, 1, 9), timezone="Mars/Olympus")], None)
    with pytest.raises(ValidationError, match="unknown IANA time zone"):
        NormalizeSettings(default_timezone="Europe/Atlantis")


async def test_text_is_tidied_and_tags_are_canonical():
    d = EventDraft(
        uid="a",
        start=date(2026, 1, 1),
        title="  Weekly\n  sync  ",
        location=" Room 1 ",
        description="line one  \r\nline two\r\n\r\n",
        tags=["#Ops", "ops ", "Deploy", ""],
    )
    await TextNormalizer().normalize([d], None)
    assert (d.title, d.location, d.description) == ("Weekly sync", "Room 1", "line one\nline two")
    assert d.tags == ["deploy", "ops"]


def test_hashtags_ignore_urls_entities_and_numbers():
    text = "Release #Deploy and #web-1 see https://x.org/#anchor, C# code, issue #12, &#38; (#ops) #büro"
    assert hashtags(text) == {"deploy", "web-1", "ops", "büro"}


async def test_hashtag_enricher_merges_title_and_description():
    e = CanonicalEvent(
        source="s",
        calendar_id="c",
        uid="u",
        title="Standup #team",
        description="notes #Ops #team",
        start_utc=datetime(2026, 1, 1, tzinfo=UTC),
        end_utc=datetime(2026, 1, 1, 1, tzinfo=UTC),
        tags=["existing"],
    )
    await HashtagEnricher().enrich([e], None, None)
    assert e.tags == ["existing", "ops", "team"]


def test_checklist_lines_become_sub_tasks_and_prose_is_ignored():
    text = (
        "Agenda for today:\n[ ] book room\n- [x] send invite\n* [X] print slides\n1. [ ] call Bob\n"
        "we said [x] in prose\n[ ]\n[y] not a box\n  [ ]   indented item  "
    )
    tasks = parse_checklist(text)
    assert [(t.text, t.done) for t in tasks] == [
        ("book room", False),
        ("send invite", True),
        ("print slides", True),
        ("call Bob", False),
        ("indented item", False),
    ]
    assert len({t.id for t in tasks}) == 5


def test_sub_task_ids_survive_ticking_and_edits_elsewhere():
    before = {t.text: t.id for t in parse_checklist("[ ] book room\n[ ] send invite")}
    after = {t.text: t.id for t in parse_checklist("Intro line\n[x] send invite\n[x] book room\n[ ] new one")}
    assert before["book room"] == after["book room"] and before["send invite"] == after["send invite"]
    twice = parse_checklist("[ ] check\n[ ] check")
    assert twice[0].id != twice[1].id


async def test_checklist_enricher_sets_sub_tasks_and_all_done():
    e = CanonicalEvent(
        source="s",
        calendar_id="c",
        uid="u",
        description="[x] a\n[X] b",
        start_utc=datetime(2026, 1, 1, tzinfo=UTC),
        end_utc=datetime(2026, 1, 1, 1, tzinfo=UTC),
    )
    await ChecklistEnricher().enrich([e], None, None)
    assert [t.text for t in e.sub_tasks] == ["a", "b"] and e.all_done


async def test_label_rules_match_whole_words_in_chosen_fields():
    rules = [
        LabelRule(tag="Deploy", keywords=["deploy", "roll out"]),
        LabelRule(tag="onsite", keywords=["HQ"], fields=["location"]),
    ]
    labeler = LabelEnricher(rules)

    def ev(title="", description="", location=""):
        return CanonicalEvent(
            source="s",
            calendar_id="c",
            uid=title or "x",
            title=title,
            description=description,
            location=location,
            start_utc=datetime(2026, 1, 1, tzinfo=UTC),
            end_utc=datetime(2026, 1, 1, 1, tzinfo=UTC),
        )

    events = [
        ev("DEPLOY web-1"),
        ev("redeployment"),
        ev("x", "we roll out today"),
        ev("HQ visit"),
        ev("visit", location="Berlin HQ"),
    ]
    await labeler.enrich(events, None, None)
    assert [e.tags for e in events] == [["deploy"], [], ["deploy"], [], ["onsite"]]
    with pytest.raises(ValidationError):
        LabelRule(tag="no spaces allowed", keywords=["x"])
