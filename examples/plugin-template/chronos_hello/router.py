"""HTTP routes, mounted under ``/api/v1``: parse, authorise, one service call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from chronos.plugin import Context, Principal, origin_of, require_scope

from chronos_hello import service
from chronos_hello.schemas import GreetIn, GreetingOut, GreetingPage, GreetOut

router = APIRouter(prefix="/hello", tags=["hello"])
WRITE = Depends(require_scope("hello.write"))
READ = Depends(require_scope("hello.read"))
GreetingId = Annotated[int, Path(ge=1, le=2**63 - 1)]
BAD_CURSOR = {400: {"description": "The cursor is invalid", "content": {"application/problem+json": {}}}}
NOT_FOUND = {404: {"description": "No greeting with this id", "content": {"application/problem+json": {}}}}


@router.post("", response_model=GreetOut, status_code=201)
async def greet(body: GreetIn, ctx: Context, request: Request, _: Principal = WRITE) -> GreetOut:
    """Greet someone and count how often they were greeted."""
    return await service.greet(ctx, body.name, origin=origin_of(request))


@router.get("/greetings", response_model=GreetingPage, responses=BAD_CURSOR)
async def list_greetings(
    ctx: Context,
    _: Principal = READ,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> GreetingPage:
    """Recorded greetings, newest first (keyset pages)."""
    return await service.list_greetings(ctx, limit=limit, cursor=cursor)


@router.get("/greetings/{greeting_id}", response_model=GreetingOut, responses=NOT_FOUND)
async def get_greeting(greeting_id: GreetingId, ctx: Context, _: Principal = READ) -> GreetingOut:
    """One recorded greeting."""
    return await service.get_greeting(ctx, greeting_id)
