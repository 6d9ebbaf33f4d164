"""Feed tokens: ids inside the token, expiry, death with the creating key, listing, older tokens."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import column, insert, select, table, update

from chronos.plugin import UTCDateTime
from events_support import apply, ev

from chronos_events.models import FeedToken

PLUGINS = ["events"]
NOW = datetime.now(UTC).replace(microsecond=0)
FT = FeedToken.__table__
KEYS = table("api_keys", column("id"), column("expires_at", UTCDateTime()))


def bare(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://chronos.test")


async def _key_id(admin, client) -> str:
    """The id of the key ``client`` authenticates with."""
    secret = client.headers["Authorization"].removeprefix("Bearer ")
    keys = (await admin.get("/api/v1/keys")).json()
    items = keys["items"] if isinstance(keys, dict) else keys
    return next(k["id"] for k in items if secret.startswith(k["prefix"]))


async def test_tokens_carry_their_id_expire_and_are_listed_with_their_creator(chronos_app, api_client):
    async with chronos_app(
        plugins=PLUGINS, config={"events": {"feed_token_days": 30, "feed_token_max_days": 60}}
    ) as app:
        await apply(app, [ev("a", NOW + timedelta(days=1))])
        admin = await api_client(app, scopes=["admin"])
        writer = await api_client(app, scopes=["events.read", "events.write"])
        key_id = await _key_id(admin, writer)
        r = await writer.post("/api/v1/calendars/work/feed-tokens", json={"name": "phone"})
        assert r.status_code == 201, r.text
        tok = r.json()
        assert tok["token"].startswith(f"cft_{tok['id']}_")
        assert tok["created_by"] == key_id and tok["scope"] == "calendar" and tok["calendar_id"] == "work"
        expires = datetime.fromisoformat(tok["expires_at"].replace("Z", "+00:00"))
        assert timedelta(days=29) < expires - NOW < timedelta(days=31)
        assert tok["last_used_at"] is None and tok["status"] == "active"
        short = (await writer.post("/api/v1/calendars/feed-tokens", json={"expires_in_days": 2})).json()
        assert short["scope"] == "all-calendars" and short["calendar_id"] is None
        assert datetime.fromisoformat(short["expires_at"].replace("Z", "+00:00")) - NOW < timedelta(days=3)
        r = await writer.post("/api/v1/calendars/work/feed-tokens", json={"expires_in_days": 61})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/expires_in_days", r.text

        async with bare(app) as b:
            assert (await b.get("/api/v1/calendars/work/feed.ics", params={"token": tok["token"]})).status_code == 200
            # the right id with a wrong secret is refused
            forged = tok["token"][:-4] + ("AAAA" if not tok["token"].endswith("AAAA") else "BBBB")
            assert (await b.get("/api/v1/calendars/work/feed.ics", params={"token": forged})).status_code == 401
            listed = (await writer.get("/api/v1/calendars/work/feed-tokens")).json()["items"]
            assert listed[0]["last_used_at"] is not None and listed[0]["created_by"] == key_id
            # an expired token is refused and listed as expired
            async with app.state.chronos.db.write() as s:
                await s.execute(update(FT).where(FT.c.id == tok["id"]).values(expires_at=NOW - timedelta(seconds=1)))
            assert (await b.get("/api/v1/calendars/work/feed.ics", params={"token": tok["token"]})).status_code == 401
            listed = (await writer.get("/api/v1/calendars/work/feed-tokens")).json()["items"]
            assert listed[0]["status"] == "expired"


async def test_tokens_die_with_the_key_that_created_them(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        await apply(app, [ev("a", NOW + timedelta(days=1))])
        admin = await api_client(app, scopes=["admin"])
        one = await api_client(app, scopes=["events.read", "events.write"])
        two = await api_client(app, scopes=["events.read", "events.write"])
        tok_one = (await one.post("/api/v1/calendars/work/feed-tokens")).json()["token"]
        tok_two = (await two.post("/api/v1/calendars/feed-tokens")).json()["token"]
        async with bare(app) as b:
            for t in (tok_one, tok_two):
                assert (await b.get("/api/v1/calendars/work/feed.ics", params={"token": t})).status_code == 200
            # revoked key: its tokens stop working
            assert (await admin.delete(f"/api/v1/keys/{await _key_id(admin, one)}")).status_code in (200, 204)
            assert (await b.get("/api/v1/calendars/work/feed.ics", params={"token": tok_one})).status_code == 401
            listed = (await two.get("/api/v1/calendars/work/feed-tokens")).json()["items"]
            assert listed[0]["status"] == "key-inactive"
            # expired key: the same
            async with app.state.chronos.db.write() as s:
                await s.execute(
                    update(KEYS).where(KEYS.c.id == await _key_id(admin, two)).values(expires_at=NOW - timedelta(1))
                )
            assert (await b.get("/api/v1/calendars/feed.ics", params={"token": tok_two})).status_code == 401


async def test_tokens_from_before_expiry_work_until_their_key_dies(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        await apply(app, [ev("a", NOW + timedelta(days=1))])
        admin = await api_client(app, scopes=["admin"])
        writer = await api_client(app, scopes=["events.read", "events.write"])
        key_id = await _key_id(admin, writer)
        old = "cft_" + "x" * 32  # the format before ids: no id, no expiry
        async with app.state.chronos.db.write() as s:
            await s.execute(
                insert(FT).values(
                    id="ft_0123456789ab",
                    calendar_id="work",
                    name="old",
                    prefix=old[:10],
                    token_hash=hashlib.sha256(old.encode()).hexdigest(),
                    created_at=NOW - timedelta(days=900),
                    created_by=key_id,
                )
            )
            assert (await s.execute(select(FT.c.expires_at))).scalar_one() is None
        async with bare(app) as b:
            assert (await b.get("/api/v1/calendars/work/feed.ics", params={"token": old})).status_code == 200
            assert (await admin.delete(f"/api/v1/keys/{key_id}")).status_code in (200, 204)
            assert (await b.get("/api/v1/calendars/work/feed.ics", params={"token": old})).status_code == 401
