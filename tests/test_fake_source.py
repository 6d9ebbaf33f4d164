"""chronos.testing.FakeSource: the source plugins' and the kernel's tests share."""

from __future__ import annotations

import pytest

from chronos.plugin import CalendarSpec, SourceError
from chronos.testing import FakeSource, fake_source_plugin


async def fetch_all(src: FakeSource, calendar: str, cursor=None):
    spec = next(c for c in src.calendars() if c.id == calendar)
    return [b async for b in src.fetch(spec, cursor)]


async def test_full_listing_pages_and_a_version_cursor():
    src = FakeSource(page=2)
    for i in range(3):
        src.put(f"e{i}", f"Event {i}")
    batches = await fetch_all(src, "cal")
    assert [[d.uid for d in b.drafts] for b in batches] == [["e0", "e1"], ["e2"]]
    assert [(b.full, b.complete, b.cursor) for b in batches] == [(True, False, None), (True, True, {"version": 1})]
    [same] = await fetch_all(src, "cal", {"version": 1})
    assert same.not_modified
    src.remove("e1")
    batches = await fetch_all(src, "cal", {"version": 1})
    assert [d.uid for b in batches for d in b.drafts] == ["e0", "e2"] and batches[-1].cursor == {"version": 2}
    assert src.fetched == [None, {"version": 1}, {"version": 1}]


async def test_change_log_mode_reads_from_the_cursor():
    src = FakeSource(page=2, mode="log")
    src.put("a", "A")
    src.put("b", "B")
    src.remove("a")
    batches = await fetch_all(src, "cal")
    assert [b.cursor for b in batches] == [{"pos": 2}, {"pos": 3}]
    assert batches[1].deleted == [("a", "")] and not batches[1].drafts
    assert await fetch_all(src, "cal", {"pos": 3}) == []


async def test_calendars_read_only_and_write_back():
    src = FakeSource(calendars=["cal", ("ro", True), CalendarSpec("spec", read_only=False)], writable=True)
    specs = {c.id: c for c in src.calendars()}
    assert {cid: s.read_only for cid, s in specs.items()} == {"cal": False, "ro": True, "spec": False}
    assert [src.can_delete(s) for s in specs.values()] == [True, False, True]
    src.put("x", "X")
    await src.delete_entry(specs["cal"], "x")
    assert src.deleted == [("x", "")] and src.entries() == []
    src.fail_deletes = True
    with pytest.raises(SourceError, match="503"):
        await src.delete_entry(specs["cal"], "y")
    with pytest.raises(SourceError, match="read-only"):
        await FakeSource().delete_entry(CalendarSpec("cal"), "x")


async def test_scripted_failures_and_the_plugin_pair():
    src = FakeSource(page=1)
    src.put("a", "A")
    src.put("b", "B")
    src.fail_at = 1
    with pytest.raises(SourceError, match="after 1 page"):
        await fetch_all(src, "cal")
    name, plugin = fake_source_plugin(src)
    assert name == "fakesource" and plugin.register_sources() == [src]
