"""Settings section ``backups``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class BackupsSettings(BaseModel):
    """Section ``backups:`` in config/chronos.yaml."""

    model_config = ConfigDict(extra="forbid")

    directory: str = Field(
        "data/backups",
        min_length=1,
        description="Where archives are written and found: the source of truth (an archive copied in by hand is"
        " listed, verified, pruned and restorable like one made here).",
    )
    schedule: str | None = Field(
        "17 3 * * *",
        description="Cron expression (five fields, UTC) of the scheduled backup, which also applies retention;"
        " null: no scheduled backups.",
    )
    keep_daily: int = Field(7, ge=0, le=3650, description="Days whose newest backup is kept.")
    keep_weekly: int = Field(4, ge=0, le=520, description="ISO weeks whose newest backup is kept.")
    keep_monthly: int = Field(12, ge=0, le=1200, description="Months whose newest backup is kept.")
    verify_after_backup: bool = Field(
        True, description="Verify every new archive at once (re-read, re-hash, open the snapshot, count rows)."
    )
    encrypt: bool = Field(
        False, description="Encrypt archives (AES-256-GCM, key derived with scrypt from backups.passphrase)."
    )
    passphrase: SecretStr | None = Field(
        None,
        description="Passphrase of encrypted archives; from the environment only (CHRONOS__BACKUPS__PASSPHRASE).",
    )
    assets: list[str] = Field(
        default_factory=list,
        description="Files or directories of template assets (images, stylesheets) stored with each backup.",
    )
    pg_dump: str = Field("pg_dump", min_length=1, description="PostgreSQL: the pg_dump binary (name or path).")
    pg_restore: str = Field("pg_restore", min_length=1, description="PostgreSQL: the pg_restore binary (name or path).")
    psql: str = Field(
        "psql", min_length=1, description="PostgreSQL: the psql binary (name or path) a restore loads the dump with."
    )

    @model_validator(mode="after")
    def _passphrase_for_encryption(self) -> BackupsSettings:
        if self.encrypt and not (self.passphrase and self.passphrase.get_secret_value()):
            raise ValueError("encrypt is on but no passphrase is set: set CHRONOS__BACKUPS__PASSPHRASE")
        return self
