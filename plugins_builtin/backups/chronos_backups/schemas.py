"""Request and response bodies of /api/v1/backups."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class BackupProgress(BaseModel):
    phase: str = Field(description="starting, snapshot, hashing, writing or verifying.")
    bytes_done: int
    bytes_total: int


class TableCount(BaseModel):
    table: str
    rows: int


class BackupOut(BaseModel):
    id: str = Field(description="The archive's file name without .tar / .tar.enc.")
    status: Literal["running", "failed", "complete", "invalid"] = Field(
        description="running or failed: being made here (see progress, error); complete: an archive whose"
        " manifest reads; invalid: a file in the backup directory that is not a usable archive (see error)."
    )
    file: str | None = Field(description="The archive's file name in the backup directory.")
    size: int | None = Field(description="Bytes.")
    encrypted: bool
    created_at: datetime = Field(description="When the snapshot was taken (from the manifest).")
    duration_ms: int | None
    backend: Literal["sqlite", "postgresql"] | None
    product_version: str | None
    row_counts: list[TableCount] = Field(description="Rows per table in the snapshot.")
    verified: bool = Field(description="The last verification of this very file passed.")
    verified_at: str | None
    verify_error: str | None
    error: str | None
    progress: BackupProgress | None


class BackupPage(BaseModel):
    items: list[BackupOut]
    next_cursor: str | None


class VerifyOut(BaseModel):
    id: str
    ok: bool = Field(
        description="Every member matches its sha256, the snapshot opens and passes its integrity"
        " check, and its row counts equal the manifest's."
    )
    error: str | None = Field(description="Why the archive failed verification.")
    verified_at: str
