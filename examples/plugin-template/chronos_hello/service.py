"""The plugin's logic and SQL. Routes, jobs and CLI commands call these
functions; they raise domain errors from :mod:`chronos.plugin` (``NotFound``,
``InvalidInput``…), which the kernel turns into problem+json answers."""

from __future__ import annotations

from sqlalchemy import func, select

from chronos.plugin import (
    InvalidInput,
    NotFound,
    Origin,
    PluginContext,
    Resource,
    decode_cursor,
    encode_cursor,
    record_audit,
)

from chronos_hello.models import Greeting
from chronos_hello.schemas import GreetingOut, GreetingPage, GreetOut
from chronos_hello.settings import HelloSettings


class Greeter:
    """The per-app object of this plugin: it phrases greetings and counts them
    since start-up. Built once per app by the kernel (see :data:`GREETER`)."""

    def __init__(self, settings: HelloSettings) -> None:
        self.settings = settings
        self.greeted = 0

    def phrase(self, name: str) -> str:
        self.greeted += 1
        return f"{self.settings.greeting}, {name}!"


#: Declared once, returned from ``register_resources``, reached with ``ctx.resource(GREETER)``.
GREETER: Resource[Greeter] = Resource("hello.greeter", lambda ctx: Greeter(ctx.section(HelloSettings)))


async def greet(ctx: PluginContext, name: str, *, origin: Origin | None = None) -> GreetOut:
    """Record a greeting for ``name`` (audited) and phrase it."""
    if not any(ch.isalpha() for ch in name):
        raise InvalidInput(
            "A name needs at least one letter",
            errors=[{"pointer": "/name", "location": "body", "detail": "needs at least one letter", "type": "name"}],
        )
    async with ctx.db.write() as s:
        row = Greeting(name=name)
        s.add(row)
        await s.flush()
        count = (await s.execute(select(func.count()).where(Greeting.name == name))).scalar_one()
        await record_audit(
            s, entity="hello_greeting", entity_id=row.id, action="create", change={"name": name}, origin=origin
        )
    return GreetOut(id=row.id, message=ctx.resource(GREETER).phrase(name), times_greeted=count)


async def get_greeting(ctx: PluginContext, greeting_id: int) -> GreetingOut:
    """One recorded greeting; ``NotFound`` when there is none with this id."""
    async with ctx.db.read() as s:
        row = await s.get(Greeting, greeting_id)
    if row is None:
        raise NotFound(f"No greeting with id {greeting_id}")
    return GreetingOut(id=row.id, name=row.name, created_at=row.created_at)


async def list_greetings(ctx: PluginContext, *, limit: int, cursor: str | None = None) -> GreetingPage:
    """Recorded greetings, newest first, one keyset page (the id is unique: no tie-breaker needed)."""
    query = select(Greeting).order_by(Greeting.id.desc()).limit(limit + 1)
    if cursor:
        (before,) = decode_cursor("hello-greetings", cursor, [int])
        query = query.where(Greeting.id < before)
    async with ctx.db.read() as s:
        rows = list((await s.execute(query)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return GreetingPage(
        items=[GreetingOut(id=r.id, name=r.name, created_at=r.created_at) for r in rows],
        next_cursor=encode_cursor("hello-greetings", [rows[-1].id]) if more else None,
    )
