"""HTTP routes of the notes and links taken from calendar entries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from chronos.plugin import Context, Principal

from chronos_commands import notes_links_service
from chronos_commands.api_types import READ, IsoDateTime

router = APIRouter()


class SourceRef(BaseModel):
    source: str | None
    calendar_id: str | None
    uid: str | None
    recurrence_id: str | None
    event_id: int | None


class NoteOut(BaseModel):
    id: int
    content: str
    description: str | None
    timestamp: datetime
    calendar_id: str | None
    source: SourceRef
    created_at: datetime


class LinkOut(BaseModel):
    id: int
    url: str
    title: str
    description: str | None
    timestamp: datetime
    calendar_id: str | None
    source: SourceRef
    created_at: datetime


class NotePage(BaseModel):
    items: list[NoteOut]
    next_cursor: str | None


class LinkPage(BaseModel):
    items: list[LinkOut]
    next_cursor: str | None


@router.get("/notes", response_model=NotePage, tags=["notes"])
async def list_notes(
    ctx: Context,
    _: Principal = Depends(READ),
    calendar_id: Annotated[list[str] | None, Query(max_length=50)] = None,
    start: Annotated[IsoDateTime | None, Query(alias="from")] = None,
    end: Annotated[IsoDateTime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """Notes taken from ``NOTIZ:``/``NOTE:`` entries, newest first."""
    return await notes_links_service.list_notes(
        ctx, calendar_id=calendar_id, start=start, end=end, limit=limit, cursor=cursor
    )


@router.get("/links", response_model=LinkPage, tags=["links"])
async def list_links(
    ctx: Context,
    _: Principal = Depends(READ),
    calendar_id: Annotated[list[str] | None, Query(max_length=50)] = None,
    start: Annotated[IsoDateTime | None, Query(alias="from")] = None,
    end: Annotated[IsoDateTime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """Links taken from ``URL:`` entries, newest first."""
    return await notes_links_service.list_links(
        ctx, calendar_id=calendar_id, start=start, end=end, limit=limit, cursor=cursor
    )
