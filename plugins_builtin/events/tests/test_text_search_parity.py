"""Full-text search finds the same events on SQLite (FTS5) and PostgreSQL (tsvector).

Every test runs on both backends against one table of expected results, so a
backend that cuts words differently fails here. PostgreSQL's default parser
would keep hosts, e-mail addresses, versions, paths and hyphenated words as
single tokens; revision events0002 indexes the text with punctuation turned
into spaces, as FTS5's ``unicode61`` tokenizer sees it.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

from chronos import testing as kit
from events_support import T0, apply, ev, z

from chronos_events.plugin import register_migrations
from chronos_events.query import EventQuery, QueryBuilder
from chronos_events.search import PG_INDEX, PG_SEPARATORS

PLUGINS = ["events"]
H = timedelta(hours=1)

EVENTS = [
    ev("deploy", T0, title="Deploy web-1 version=1.2 to example.com", description="Rollback plan"),
    ev("mail", T0 + H, title="Mail jane.doe@example.org re: e-mail"),
    ev(
        "docs",
        T0 + 2 * H,
        title="Docs",
        description="See https://example.net/guide?q=1",
        location="/srv/www/index.html",
    ),
    ev(
        "unicode",
        T0 + 3 * H,
        title="Größenänderung der Übersicht",
        description="Встреча в Москве — 会議 東京 Αθήνα",
        location="नमस्ते दुनिया",
    ),
    ev("plain", T0 + 4 * H, title="Weekly sync", description="examination room"),
]

EXPECTED = {
    # hosts, addresses, versions, hyphenated words: their parts are words
    "example.com": ["deploy"],
    "web-1": ["deploy"],
    "1.2": ["deploy"],
    "version=1.2": ["deploy"],
    "example": ["deploy", "mail", "docs"],
    "jane.doe@example.org": ["mail"],
    "jane": ["mail"],
    "e-mail": ["mail"],
    "example.net": ["docs"],
    "guide": ["docs"],
    "index.html": ["docs"],
    "srv": ["docs"],
    "example.org jane": ["mail"],  # all terms, any order
    # prefixes
    "exam*": ["deploy", "mail", "docs", "plain"],
    "example.c*": ["deploy"],  # a prefix on the last word of a phrase
    "roll*": ["deploy"],
    # phrases: adjacent words in this order, inside one field
    '"to example.com"': ["deploy"],
    '"example.com to"': [],
    '"com rollback"': [],  # the title's last word and the description's first
    '"rollback plan"': ["deploy"],
    # Unicode words, matched and case-folded alike
    "Übersicht": ["unicode"],
    "übersicht": ["unicode"],
    "ÜBERSICHT": ["unicode"],
    "größenänderung": ["unicode"],
    "über*": ["unicode"],
    "москве": ["unicode"],
    "МОСКВЕ": ["unicode"],
    "моск*": ["unicode"],
    "東京": ["unicode"],
    "αθήνα": ["unicode"],
    "Москве—会議": ["unicode"],  # a non-ASCII separator inside a typed word
    '"встреча в москве"': ["unicode"],
    "नमस्ते": ["unicode"],  # combining marks stay inside the word
    '"नमस्ते दुनिया"': ["unicode"],
    # nothing to find, and never an error
    "examples": [],
    "com.example": [],
    "'; DROP TABLE events; --": [],
    "—": [],
    "½": [],  # a word to SQLite, no lexeme at all to PostgreSQL
}


async def _ids(c, query: str) -> list[str]:
    params = {"from": z(T0 - H), "to": z(T0 + 6 * H), "text": query}
    r = await c.get("/api/v1/events", params=params)
    assert r.status_code == 200, (query, r.text)
    return [i["uid"] for i in r.json()["items"]]


async def test_both_backends_find_the_same_events(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        await apply(app, EVENTS)
        c = await api_client(app, scopes=["events.read"])
        found = {q: await _ids(c, q) for q in EXPECTED}
        wrong = {q: (found[q], EXPECTED[q]) for q in EXPECTED if found[q] != EXPECTED[q]}
        assert wrong == {}, f"{app.state.chronos.db.dialect}: (found, expected) {wrong}"


async def test_edits_are_searchable_with_the_new_words(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        await apply(app, [ev("x", T0, title="Call bob@example.com")])
        await apply(app, [ev("x", T0, title="Call alice@example.org")])
        c = await api_client(app, scopes=["events.read"])
        assert await _ids(c, "alice") == ["x"]
        assert await _ids(c, "bob") == []
        assert await _ids(c, "example.org") == ["x"]


async def _index_definition(app) -> str | None:
    ctx = app.state.chronos
    async with ctx.db.read() as s:
        return (
            await s.execute(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = :n AND schemaname = current_schema()"),
                {"n": PG_INDEX},
            )
        ).scalar()


async def test_postgresql_queries_use_the_search_index(chronos_app):
    async with chronos_app(plugins=PLUGINS) as app:
        ctx = app.state.chronos
        if ctx.db.is_sqlite:
            return  # FTS5: see test_schema.test_window_queries_use_an_index
        await apply(app, EVENTS)
        definition = await _index_definition(app)
        assert definition is not None and definition.count("regexp_replace(") == 3, definition
        assert PG_SEPARATORS in definition, definition
        compiled = QueryBuilder(ctx.db.dialect).page(EventQuery(direction="all", text="example.c*", limit=50))
        async with ctx.db.read() as s:
            # Only the search index can answer this with both of these off; a
            # query expression that differs from the index's ends in a Seq Scan.
            await s.execute(text("SET LOCAL enable_seqscan = off"))
            await s.execute(text("SET LOCAL enable_indexscan = off"))
            plan = "\n".join(r[0] for r in (await s.execute(text("EXPLAIN " + compiled.sql), compiled.params)).all())
        assert f"Bitmap Index Scan on {PG_INDEX}" in plan, plan


async def test_the_revision_downgrades_and_upgrades(chronos_app, api_client, database):
    migs = register_migrations()
    async with chronos_app(plugins=PLUGINS) as app:
        await apply(app, EVENTS)
    await kit.downgrade_database(database, migs, "events", "events0001")
    async with chronos_app(plugins=PLUGINS, config={"database": {"migrate_on_start": False}}) as app:
        if database.backend == "postgresql":
            definition = await _index_definition(app)
            assert definition is not None and "regexp_replace" not in definition, definition
    assert list(await kit.migrate_database(database, migs)) == ["events"]  # events0002 and any later revision
    async with chronos_app(plugins=PLUGINS) as app:
        if database.backend == "postgresql":
            assert "regexp_replace" in (await _index_definition(app) or "")
        c = await api_client(app, scopes=["events.read"])
        assert await _ids(c, "example") == ["deploy", "mail", "docs"]
