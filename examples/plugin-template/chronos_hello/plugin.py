"""The plugin module named by the entry point: hook implementations only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy import func, select

from chronos.plugin import (
    Migrations,
    Principal,
    Router,
    Scope,
    SettingsSection,
    hookimpl,
    origin_of,
    record_audit,
    require_scope,
)
from chronos_hello.models import Greeting


class HelloSettings(BaseModel):
    """Section `hello:` in config/chronos.yaml."""

    greeting: str = Field("Hello", max_length=50, description="Word used to greet.")


class GreetIn(BaseModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]


class GreetOut(BaseModel):
    message: str
    times_greeted: int


router = APIRouter(prefix="/hello", tags=["hello"])


@router.post("", response_model=GreetOut, status_code=201)
async def greet(
    body: GreetIn, request: Request, principal: Principal = Depends(require_scope("hello.write"))
) -> GreetOut:
    ctx = request.app.state.chronos
    settings: HelloSettings = ctx.section(HelloSettings)
    async with ctx.db.write() as s:
        s.add(Greeting(name=body.name))
        await s.flush()
        count = (await s.execute(select(func.count()).where(Greeting.name == body.name))).scalar_one()
        await record_audit(s, entity="hello_greeting", action="create", change={"name": body.name},
                           principal=principal, origin=origin_of(request))
    return GreetOut(message=f"{settings.greeting}, {body.name}!", times_greeted=count)


@hookimpl
def register_settings():
    return [SettingsSection("hello", HelloSettings)]


@hookimpl
def register_scopes():
    return [Scope("hello.write", "Greet people")]


@hookimpl
def register_routers():
    return [Router("hello", router)]


@hookimpl
def register_migrations():
    return [Migrations("hello", "chronos_hello")]
