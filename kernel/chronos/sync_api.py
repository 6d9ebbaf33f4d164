"""HTTP routes of the sync pipeline: runs, calendars' state, starting syncs; its /health block."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.audit import record_audit
from chronos.auth import Principal, current_context, origin_of, require_scope
from chronos.db.sync_models import SyncRun, SyncState
from chronos.errors import Problem, ProblemModel
from chronos.host import PluginHost
from chronos.openapi import restrict_strings
from chronos.pagination import decode_cursor, encode_cursor
from chronos.pipeline import CalendarRef, SyncPipeline, UnknownCalendar
from chronos.records import HealthResult, SyncTrigger

READ = Depends(require_scope("events.read"))
WRITE = Depends(require_scope("events.write"))
RunStatus = Literal["running", "ok", "partial", "error"]
SourceName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
CalendarId = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class RunError(BaseModel):
    stage: str = Field(description="source, normalize, validate, enrich, store, sink or kernel")
    plugin: str
    name: str = Field(description="The record that failed (normaliser, enricher, sink or source name)")
    uid: str
    recurrence_id: str
    message: str


class SyncRunOut(BaseModel):
    id: int
    source: str
    calendar_id: str
    trigger: SyncTrigger = Field(description="What started the run")
    full: bool = Field(description="A full resync was asked for (the saved cursor was ignored)")
    status: RunStatus
    not_modified: bool = Field(description="The source reported no change (HTTP 304, same file…)")
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    batches: int
    added: int
    updated: int
    unchanged: int
    deleted: int
    failed: int
    errors: list[RunError] = Field(description="Failed items (at most 100 are kept; `failed` is exact)")
    error: str | None = Field(description="Why the run failed, or a summary of the failed items")
    cursor: dict[str, Any] | None = Field(description="The source's cursor saved by this run")


class SyncRunPage(BaseModel):
    items: list[SyncRunOut]
    next_cursor: str | None


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: SourceName | None = Field(None, description="Only this source (default: every source)")
    calendar_id: CalendarId | None = Field(None, description="Only this calendar")
    full: StrictBool = Field(False, description="Ignore the saved cursor and list everything again")


class StartedRun(BaseModel):
    id: int
    source: str
    calendar_id: str
    status: Literal["running"] = "running"


class SkippedRun(BaseModel):
    source: str
    calendar_id: str
    reason: str
    run_id: int | None = Field(description="The running run (poll /sync/runs/{id}), when its row is found")


class SyncStarted(BaseModel):
    runs: list[StartedRun]
    skipped: list[SkippedRun] = Field(description="Calendars left out because a sync of them is running")


class CalendarStateOut(BaseModel):
    source: str
    calendar_id: str
    interval_seconds: float
    read_only: bool
    running: bool
    last_run_id: int | None
    last_status: RunStatus | None
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None


def source_calendars(host: PluginHost) -> dict[str, list[str]]:
    """Every enabled source's calendar ids, as :class:`SyncPipeline` lists them (a failing source has none)."""
    out: dict[str, list[str]] = {}
    for _plugin, src in host.sources():
        try:
            out[src.name] = [spec.id for spec in src.calendars()]
        except Exception:  # noqa: BLE001 - the pipeline logs it when it starts
            out[src.name] = []
    return out


def document_sync_request(schema: dict[str, Any], calendars: Mapping[str, Sequence[str]]) -> None:
    """Write the enabled sources and their calendars into the ``SyncRequest`` schema, in place.

    ``calendars`` maps every enabled source to its calendars' ids (what
    :class:`SyncPipeline` selects from): ``source`` is one of the sources,
    ``calendar_id`` one of the named source's calendars, or of any source's
    when no source is named; anything else answers 404.
    """
    props = schema.get("properties", {})
    every = sorted({c for ids in calendars.values() for c in ids})
    restrict_strings(props["source"], sorted(calendars))
    restrict_strings(props["calendar_id"], every)
    null = {"type": "null"}
    branches: list[dict[str, Any]] = [
        {"properties": {"source": null, "calendar_id": {"anyOf": [{"enum": every}, null] if every else [null]}}}
    ]
    for name, ids in sorted(calendars.items()):
        own = sorted(set(ids))
        branches.append(
            {
                "required": ["source"],
                "properties": {
                    "source": {"enum": [name]},
                    "calendar_id": {"anyOf": [{"enum": own}, null] if own else [null]},
                },
            }
        )
    schema["anyOf"] = branches


def _pipeline(request: Request) -> SyncPipeline:
    pipeline: SyncPipeline = request.app.state.runtime.pipeline
    return pipeline


router = APIRouter()


@router.get("/sync/runs", response_model=SyncRunPage, tags=["sync"])
async def list_runs(
    request: Request,
    _: Principal = READ,
    source: Annotated[SourceName | None, Query()] = None,
    calendar_id: Annotated[CalendarId | None, Query()] = None,
    status: Annotated[RunStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """Sync runs, newest first."""
    q = select(SyncRun).order_by(SyncRun.id.desc()).limit(limit + 1)
    if source is not None:
        q = q.where(SyncRun.source == source)
    if calendar_id is not None:
        q = q.where(SyncRun.calendar_id == calendar_id)
    if status is not None:
        q = q.where(SyncRun.status == status)
    if cursor:
        (last_id,) = decode_cursor("sync_runs", cursor, [int])
        q = q.where(SyncRun.id < last_id)
    async with current_context(request).db.read() as s:
        rows = (await s.execute(q)).scalars().all()
    items = rows[:limit]
    nxt = encode_cursor("sync_runs", [items[-1].id]) if len(rows) > limit else None
    return {"items": [SyncRunOut.model_validate(r, from_attributes=True) for r in items], "next_cursor": nxt}


@router.get("/sync/runs/{run_id}", response_model=SyncRunOut, tags=["sync"])
async def get_run(
    request: Request, run_id: Annotated[int, Path(ge=1, le=2**63 - 1)], _: Principal = READ
) -> SyncRunOut:
    """One sync run with its counters and failed items."""
    async with current_context(request).db.read() as s:
        row = await s.get(SyncRun, run_id)
    if row is None:
        raise Problem(404, f"No sync run with id {run_id}", type="not-found")
    return SyncRunOut.model_validate(row, from_attributes=True)


@router.get("/sync/calendars", response_model=list[CalendarStateOut], tags=["sync"])
async def list_calendars(request: Request, _: Principal = READ) -> list[dict[str, Any]]:
    """Every calendar of every enabled source with the outcome of its last sync."""
    pipeline = _pipeline(request)
    async with current_context(request).db.read() as s:
        states = {(r.source, r.calendar_id): r for r in (await s.execute(select(SyncState))).scalars()}
    out = []
    for key, ref in sorted(pipeline.calendars.items()):
        st = states.get(key)
        out.append(
            {
                "source": key[0],
                "calendar_id": key[1],
                "interval_seconds": ref.calendar.interval_seconds,
                "read_only": ref.calendar.read_only,
                "running": pipeline.is_running(*key),
                "last_run_id": st.last_run_id if st else None,
                "last_status": st.last_status if st else None,
                "last_success_at": st.last_success_at if st else None,
                "last_error_at": st.last_error_at if st else None,
                "last_error": st.last_error if st else None,
            }
        )
    return out


#: How long starting runs may wait for the database before the request gives up (503).
START_WAIT_SECONDS = 3.0


@router.post(
    "/events/sync",
    status_code=202,
    response_model=SyncStarted,
    tags=["sync"],
    responses={
        404: {"model": ProblemModel, "description": "Unknown source or calendar"},
        409: {"model": ProblemModel, "description": "Already running (`running` names the calendars)"},
        503: {
            "model": ProblemModel,
            "description": "The database did not take the new runs within a few seconds; nothing was started"
            " (Retry-After)",
        },
    },
)
async def start_sync(
    request: Request,
    body: Annotated[SyncRequest | None, Body()] = None,
    principal: Principal = WRITE,
) -> dict[str, Any]:
    """Start syncs in the background and return their run ids (poll ``/sync/runs/{id}``).

    Without a body every calendar of every source syncs; ``source`` and
    ``calendar_id`` narrow it down. A calendar whose sync is running is
    skipped; if that leaves nothing to start, the answer is 409. The answer
    never waits for a run: the run rows are written in one transaction, and if
    the database cannot take it within a few seconds (busy with another
    process's write, say) the answer is 503 and nothing starts.
    """
    body = body or SyncRequest()
    pipeline = _pipeline(request)
    try:
        refs = pipeline.select(body.source, body.calendar_id)
    except UnknownCalendar as exc:
        raise Problem(404, str(exc), type="not-found") from None

    async def audit(s: AsyncSession, ref: CalendarRef, run_id: int) -> None:
        await record_audit(
            s,
            entity="sync_run",
            entity_id=run_id,
            action="start",
            principal=principal,
            origin=origin_of(request),
            change={"source": ref.key[0], "calendar_id": ref.key[1], "full": body.full},
        )

    try:
        started, skipped = await pipeline.start_many(
            refs, trigger="api", full=body.full, audit=audit, wait=START_WAIT_SECONDS
        )
    except TimeoutError:
        raise Problem(
            503,
            f"the database did not take the new sync runs within {START_WAIT_SECONDS:g} s (another write is in"
            " progress); nothing was started, try again shortly",
            type="sync-start-busy",
            headers={"Retry-After": "5"},
        ) from None
    runs = [{"id": run_id, "source": ref.key[0], "calendar_id": ref.key[1]} for ref, run_id in started]
    running = await _running_runs(request, [ref.key for ref, _why in skipped]) if skipped else {}
    skips = [
        {"source": ref.key[0], "calendar_id": ref.key[1], "reason": why, "run_id": running.get(ref.key)}
        for ref, why in skipped
    ]
    if skips and not runs:
        raise Problem(
            409,
            "; ".join(f"{why} (run {running[ref.key]})" if ref.key in running else why for ref, why in skipped),
            type="sync-running",
            running=[{"source": s["source"], "calendar_id": s["calendar_id"], "run_id": s["run_id"]} for s in skips],
        )
    return {"runs": runs, "skipped": skips}


async def _running_runs(request: Request, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The newest running run of each calendar in ``keys`` (a read: never waits for a writer)."""
    wanted = set(keys)
    q = select(SyncRun.id, SyncRun.source, SyncRun.calendar_id).where(SyncRun.status == "running")
    q = q.where(SyncRun.calendar_id.in_(sorted({k[1] for k in wanted}))).order_by(SyncRun.id)
    async with current_context(request).db.read() as s:
        rows = (await s.execute(q)).all()
    return {(r.source, r.calendar_id): r.id for r in rows if (r.source, r.calendar_id) in wanted}


async def sync_health(ctx: Any, pipeline: SyncPipeline | None) -> HealthResult:
    """The last sync of every calendar; degraded when a calendar's last run failed."""
    if pipeline is None or not pipeline.calendars:
        return HealthResult("ok", {"calendars": {}})
    async with ctx.db.read() as s:
        states = {(r.source, r.calendar_id): r for r in (await s.execute(select(SyncState))).scalars()}
    calendars: dict[str, Any] = {}
    failing: list[str] = []
    for key in sorted(pipeline.calendars):
        st = states.get(key)
        name = f"{key[0]}/{key[1]}"
        if st is None or st.last_status is None:
            calendars[name] = {"status": "never synced", "running": pipeline.is_running(*key)}
            continue
        calendars[name] = {
            "status": st.last_status,
            "running": pipeline.is_running(*key),
            "last_run_id": st.last_run_id,
            "last_success_at": st.last_success_at.isoformat().replace("+00:00", "Z") if st.last_success_at else None,
        }
        if st.last_status in ("error", "partial"):
            calendars[name]["error"] = st.last_error
            failing.append(name)
    detail: dict[str, Any] = {"calendars": calendars}
    if failing:
        detail["detail"] = f"last sync failed for {', '.join(failing)}"
        return HealthResult("degraded", detail)
    return HealthResult("ok", detail)
