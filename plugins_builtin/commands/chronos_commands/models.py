"""Tables of the commands plugin.

``external_commands``, ``whitelists`` and ``workflows`` are public tables (named
by the project, read by dashboards and reports); the plugin's private tables
carry the ``commands_`` prefix: ``commands_workflow_firings``,
``commands_source_deletions``, ``commands_notes`` and ``commands_links`` (the
notes and links are public through ``GET /api/v1/notes`` and ``/links``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from chronos.plugin import Base, BigIntPK, JSONType, UTCDateTime, utcnow


class ExternalCommand(Base):
    """The command queue: one row per command, leased by pollers of its target system."""

    __tablename__ = "external_commands"
    __table_args__ = (
        # The poll: due pending commands of one system, oldest first.
        Index("ix_external_commands_poll", "target_system", "status", "not_before", "id"),
        # Stalled-lease recovery across systems.
        Index("ix_external_commands_lease", "status", "lease_expires_at"),
        Index("ix_external_commands_status_id", "status", "id"),
        # Edit-aware re-timing: commands of one calendar entry.
        Index("ix_external_commands_source", "source", "source_uid"),
        CheckConstraint(
            "status IN ('pending','processing','completed','failed','dead','cancelled','missed')", name="status"
        ),
        CheckConstraint("origin IN ('api','calendar','workflow')", name="origin"),
        # SQLite: a deleted command's id is never handed out again (revision commands0002).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    target_system: Mapped[str] = mapped_column(String(64))
    command: Mapped[str] = mapped_column(String(64))
    params_json: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    args: Mapped[list[str]] = mapped_column(JSONType, default=list)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    leased_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    leased_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    idempotency_key: Mapped[str] = mapped_column(String(300), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    result_json: Mapped[Any] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text(), nullable=True)
    origin: Mapped[str] = mapped_column(String(16), default="api")
    # The calendar entry a command came from (no foreign key: the event store is another plugin).
    source: Mapped[str | None] = mapped_column(String(128), nullable=True)
    calendar_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    source_uid: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    recurrence_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    event_start: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # A scheduled calendar ACTION keeps its entry in the calendar while the
    # command is pending, so moving or deleting the entry re-times or cancels it.
    entry_kept: Mapped[bool] = mapped_column(Boolean, default=False)
    # Workflow lineage.
    parent_command_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("external_commands.id", ondelete="SET NULL"), nullable=True
    )
    workflow_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("workflows.id", ondelete="SET NULL"), nullable=True
    )
    workflow_depth: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WhitelistEntry(Base):
    """One allowed (system, action) pair and the params it accepts."""

    __tablename__ = "whitelists"
    __table_args__ = (
        UniqueConstraint("system", "action"),
        CheckConstraint("schedule IN ('now','event_start')", name="schedule"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    system: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    allowed_params_json: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    schedule: Mapped[str] = mapped_column(String(16), default="now")
    max_attempts: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # How late (seconds after not_before) a command may still be handed out; None = no limit.
    grace_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    origin: Mapped[str] = mapped_column(String(16), default="api")
    # Calendar sources and calendar ids whose ACTION: entries may create these commands; None = any.
    sources: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True, default=None)
    calendars: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Workflow(Base):
    """A rule: when a command completes or fails, enqueue a follow-up command."""

    __tablename__ = "workflows"
    __table_args__ = (
        Index("ix_workflows_trigger", "trigger_command", "on_status"),
        CheckConstraint("on_status IN ('completed','failed')", name="on_status"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    trigger_command: Mapped[str] = mapped_column(String(64))
    trigger_target: Mapped[str | None] = mapped_column(String(64), nullable=True)
    on_status: Mapped[str] = mapped_column(String(16))
    action_command: Mapped[str] = mapped_column(String(64))
    action_target: Mapped[str] = mapped_column(String(64))
    params_template_json: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    delay_seconds: Mapped[int] = mapped_column(Integer, default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WorkflowFiring(Base):
    """Each rule fires at most once per triggering command (the unique key enforces it)."""

    __tablename__ = "commands_workflow_firings"
    __table_args__ = (UniqueConstraint("workflow_id", "trigger_command_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    workflow_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("workflows.id", ondelete="CASCADE"))
    trigger_command_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("external_commands.id", ondelete="CASCADE"), index=True
    )
    follow_command_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("external_commands.id", ondelete="SET NULL"), nullable=True
    )
    outcome: Mapped[str] = mapped_column(String(16))  # enqueued | rejected | depth_limit | error
    detail: Mapped[str | None] = mapped_column(Text(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SourceDeletion(Base):
    """A consumed entry still to be deleted at its (writable) source, retried until it is."""

    __tablename__ = "commands_source_deletions"
    __table_args__ = (UniqueConstraint("source", "calendar_id", "uid", "recurrence_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(128))
    calendar_id: Mapped[str] = mapped_column(String(200))
    uid: Mapped[str] = mapped_column(String(1024))
    recurrence_id: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(String(200), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Note(Base):
    """``NOTIZ:`` / ``NOTE:`` entries taken out of calendars."""

    __tablename__ = "commands_notes"
    __table_args__ = (Index("ix_commands_notes_timestamp", "timestamp", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    content: Mapped[str] = mapped_column(Text())
    description: Mapped[str | None] = mapped_column(Text(), nullable=True)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime())
    calendar_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    source: Mapped[str | None] = mapped_column(String(128), nullable=True)
    source_uid: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    recurrence_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    consumption_key: Mapped[str] = mapped_column(String(80), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Link(Base):
    """``URL:`` entries taken out of calendars."""

    __tablename__ = "commands_links"
    __table_args__ = (Index("ix_commands_links_timestamp", "timestamp", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2048))
    title: Mapped[str] = mapped_column(Text())
    description: Mapped[str | None] = mapped_column(Text(), nullable=True)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime())
    calendar_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    source: Mapped[str | None] = mapped_column(String(128), nullable=True)
    source_uid: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    recurrence_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    consumption_key: Mapped[str] = mapped_column(String(80), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
