"""HTTP routes under ``/api/v1/backups``: parse, authorise, call one use case, shape the answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from chronos.plugin import Context, Principal, origin_of, require_scope

from chronos_backups import service
from chronos_backups.schemas import BackupOut, BackupPage, VerifyOut

router = APIRouter(prefix="/backups", tags=["backups"])
MANAGE = Depends(require_scope("backups.manage"))
BackupId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$", description="A backup's id.")]
NOT_FOUND = {404: {"description": "No backup with this id"}}
RUNNING = {409: {"description": "The backup is still being written"}}


@router.post(
    "",
    status_code=202,
    response_model=BackupOut,
    responses={409: {"description": "A backup is already running"}, 503: {"description": "The job runner is off"}},
)
async def create_backup(ctx: Context, request: Request, _: Principal = MANAGE) -> JSONResponse:
    """Start a backup; answers 202 at once. Follow its progress at ``Location``."""
    view = service.start_backup(ctx, origin_of(request))
    body = BackupOut.model_validate(view).model_dump(mode="json")
    return JSONResponse(body, status_code=202, headers={"Location": f"/api/v1/backups/{view['id']}"})


@router.get("", response_model=BackupPage)
async def list_backups(
    ctx: Context,
    _: Principal = MANAGE,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """Every archive in the backup directory (and backups running or failed here), newest first."""
    return await service.list_backups(ctx, limit=limit, cursor=cursor)


@router.get("/{backup_id}", response_model=BackupOut, responses=NOT_FOUND)
async def get_backup(backup_id: BackupId, ctx: Context, _: Principal = MANAGE) -> dict[str, Any]:
    """One backup: its manifest's summary, its verification, or its progress while it is made."""
    return await service.get_backup(ctx, backup_id)


@router.get(
    "/{backup_id}/download",
    response_class=FileResponse,
    responses={
        200: {"description": "The archive", "content": {"application/octet-stream": {"schema": {"type": "string"}}}},
        **NOT_FOUND,
        **RUNNING,
    },
)
async def download_backup(backup_id: BackupId, ctx: Context, _: Principal = MANAGE) -> FileResponse:
    """The archive file, streamed."""
    path = service.download_path(ctx, backup_id)
    return FileResponse(path, media_type="application/octet-stream", filename=path.name)


@router.delete("/{backup_id}", status_code=204, responses={**NOT_FOUND, **RUNNING})
async def delete_backup(backup_id: BackupId, ctx: Context, request: Request, _: Principal = MANAGE) -> Response:
    """Delete an archive (and its verification record)."""
    await service.delete_backup(ctx, backup_id, origin_of(request))
    return Response(status_code=204)


@router.post("/{backup_id}/verify", response_model=VerifyOut, responses={**NOT_FOUND, **RUNNING})
async def verify_backup(backup_id: BackupId, ctx: Context, request: Request, _: Principal = MANAGE) -> dict[str, Any]:
    """Re-hash every member, open the snapshot, check its integrity and compare row counts with the manifest.

    Answers 200 either way; ``ok`` says whether the archive passed."""
    return await service.verify_backup(ctx, backup_id, origin_of(request))
