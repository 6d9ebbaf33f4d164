"""The public surface for plugin authors.

A plugin imports from here and from :mod:`chronos.testing` only; every other
module of the kernel is private and may change without notice.

A plugin is a module (or a module-level object) named by an entry point in the
group ``chronos.plugins``; the entry-point name is the plugin's name and its
configuration section. It implements hooks from :mod:`chronos.hookspecs` with the
:data:`hookimpl` marker::

    from chronos.plugin import hookimpl, SettingsSection

    @hookimpl
    def register_settings():
        return [SettingsSection("hello", HelloSettings)]

Core code (services, queues, stages) raises the domain errors exported here
(``NotFound``, ``InvalidInput``, ``Conflict`` …); routes may also raise
``Problem`` directly. Routes receive the plugin context as ``ctx: Context``.

``ical`` is the iCalendar parsing and recurrence expansion shared by every
source that reads iCalendar (``ical.split_calendar``, ``ical.parse_groups``
within an ``ical.Window``), so a VEVENT maps to the same drafts everywhere.
``webhook_signing`` signs and verifies webhook requests (Standard Webhooks v1
and ``X-Signature``) for everything that posts or receives them.

Every outbound HTTP request goes through ``outbound_client(ctx)`` (an
``httpx.AsyncClient`` that refuses non-public destinations unless ``network.allow``
lists them, re-checks redirects and caps bodies) or, for a client library with
its own HTTP stack, ``await check_outbound(ctx, url)`` right before connecting.
"""

from __future__ import annotations

import pluggy

from chronos.audit import record_audit, record_audit_many
from chronos.auth import Context, Public, origin_of, require_scope
from chronos.context import PluginContext
from chronos.contracts import ical, webhook_signing
from chronos.contracts.events import (
    WHOLE_SERIES,
    ApplyResult,
    CalendarSpec,
    CanonicalEvent,
    Enricher,
    EventDraft,
    EventIntake,
    EventKey,
    EventStore,
    Normalizer,
    Sink,
    SinkBatch,
    Source,
    SourceBatch,
    SourceError,
    StoredEvent,
    SubTask,
)
from chronos.contracts.mail import (
    AttachmentsTooLarge,
    IdempotencyConflict,
    InvalidMail,
    MailAttachment,
    MailError,
    MailNotConfigured,
    MailQueue,
    OutgoingMail,
    QueuedDelivery,
    RenderedEmail,
    TemplateNotFound,
    TemplateRenderer,
    TemplateRenderError,
    TemplateTypeMismatch,
    request_fingerprint,
)
from chronos.contracts.outbox import (
    Delivery,
    DeliveryResult,
    DeliveryTarget,
    EventType,
    Outbox,
    OutboxMessage,
    Publication,
    SignedAnswer,
    SignedCall,
    SignedRequests,
    message_title,
    shorten,
    type_matches,
    value_text,
)
from chronos.contracts.planning import ConflictIndex, EventAnalytics
from chronos.db.base import Base, BigIntPK, JSONType, UTCDateTime, one_of, utcnow
from chronos.errors import Problem
from chronos.exceptions import (
    Busy,
    ChronosError,
    Conflict,
    InvalidInput,
    MalformedInput,
    NotAuthenticated,
    NotFound,
    NotPermitted,
    TooLarge,
    Unavailable,
)
from chronos.identity import Origin, Principal
from chronos.jobs import JobBusy, live_runners
from chronos.keys import active_key_ids
from chronos.net import OutboundPolicy, OutboundRefused, ResponseTooLarge, check_outbound, outbound_client
from chronos.openapi import raw_json_body, refuse_null, setting_enum, setting_maximum
from chronos.pagination import decode_cursor, encode_cursor
from chronos.records import (
    CliCommand,
    HealthCheck,
    HealthResult,
    Job,
    JobContext,
    JsonSchema,
    Migrations,
    Resource,
    Router,
    Scope,
    Service,
    SettingsSection,
    WebAssets,
)

hookimpl = pluggy.HookimplMarker("chronos")

__all__ = [
    "OutboundPolicy",
    "OutboundRefused",
    "ResponseTooLarge",
    "check_outbound",
    "outbound_client",
    "active_key_ids",
    "live_runners",
    "ical",
    "webhook_signing",
    "raw_json_body",
    "refuse_null",
    "setting_enum",
    "setting_maximum",
    "ApplyResult",
    "CalendarSpec",
    "CanonicalEvent",
    "Enricher",
    "EventDraft",
    "EventIntake",
    "EventKey",
    "EventStore",
    "Normalizer",
    "Sink",
    "SinkBatch",
    "Source",
    "SourceBatch",
    "SourceError",
    "StoredEvent",
    "SubTask",
    "WHOLE_SERIES",
    "ConflictIndex",
    "EventAnalytics",
    "Delivery",
    "DeliveryResult",
    "DeliveryTarget",
    "EventType",
    "Outbox",
    "OutboxMessage",
    "Publication",
    "SignedAnswer",
    "SignedCall",
    "SignedRequests",
    "message_title",
    "shorten",
    "type_matches",
    "value_text",
    "AttachmentsTooLarge",
    "IdempotencyConflict",
    "InvalidMail",
    "MailAttachment",
    "MailError",
    "MailNotConfigured",
    "MailQueue",
    "OutgoingMail",
    "QueuedDelivery",
    "RenderedEmail",
    "TemplateNotFound",
    "TemplateRenderer",
    "TemplateRenderError",
    "TemplateTypeMismatch",
    "request_fingerprint",
    "Busy",
    "ChronosError",
    "Conflict",
    "Context",
    "InvalidInput",
    "MalformedInput",
    "NotAuthenticated",
    "NotFound",
    "NotPermitted",
    "Origin",
    "Resource",
    "TooLarge",
    "Unavailable",
    "origin_of",
    "Base",
    "BigIntPK",
    "CliCommand",
    "HealthCheck",
    "HealthResult",
    "JSONType",
    "one_of",
    "Job",
    "JobBusy",
    "JobContext",
    "JsonSchema",
    "Migrations",
    "PluginContext",
    "Principal",
    "Public",
    "Problem",
    "Router",
    "Scope",
    "Service",
    "SettingsSection",
    "UTCDateTime",
    "WebAssets",
    "decode_cursor",
    "encode_cursor",
    "hookimpl",
    "record_audit",
    "record_audit_many",
    "require_scope",
    "utcnow",
]
