"""The outbox contract: publish event messages, deliver them to targets.

Any plugin publishes a message (an event type, a JSON payload, an optional
dedupe key) through :class:`Outbox` **in the transaction of the change it
reports**: ``enqueue`` writes with the caller's session, so a rollback
publishes nothing and a committed change is never lost. The ``webhooks``
builtin plugin provides the outbox (``register_services``); when it is not
enabled a producer skips publishing at no cost::

    if ctx.has_service(Outbox):
        await ctx.service(Outbox).enqueue(session, "command.completed", {"id": cmd.id})

Event types are declared with :class:`EventType` records returned from
``register_schemas`` (one JSON Schema per type, exported as
``schemas/<type>.schema.json``). The outbox refuses undeclared types.

Delivery: a dispatcher job fans every message out to each subscriber — the
webhook endpoints configured through the API and every
:class:`DeliveryTarget` a plugin registers (``register_delivery_targets``:
Telegram, Slack, n8n …) whose ``accepts(event_type)`` is true. Each
(message, subscriber) pair is one *delivery* with its own attempts, retry
schedule and dead letter; see :class:`DeliveryTarget` for how a target's
answer drives them.
"""

from __future__ import annotations

import fnmatch
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from chronos.identity import Principal
from chronos.records import JsonSchema

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class EventType(JsonSchema):
    """A publishable event type and the JSON Schema of its payload.

    Return it from ``register_schemas``: ``name`` is the event type
    (``command.completed``), ``model`` the pydantic model of the payload, and
    the schema is exported as ``schemas/<name>.schema.json`` like any other.

    Example::

        @hookimpl
        def register_schemas(ctx):
            return [EventType("command.completed", CommandCompleted, "A command reported success")]
    """

    description: str = ""


def type_matches(pattern: str, event_type: str) -> bool:
    """Whether a subscription filter matches an event type.

    A filter is an exact type (``command.failed``), a prefix ending in ``.*``
    (``command.*`` matches every ``command.`` type) or ``*`` (everything).
    """
    if pattern == "*" or pattern == event_type:
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return False


def valid_type_filter(pattern: str) -> bool:
    """A filter is ``*``, a type name, or a type prefix followed by ``.*``."""
    if pattern == "*":
        return True
    body = pattern[:-2] if pattern.endswith(".*") else pattern
    return bool(body) and not any(c in body for c in "*?[]") and fnmatch.fnmatch(body, "[a-z]*")


@dataclass(frozen=True)
class OutboxMessage:
    """One published message, as subscribers receive it.

    ``webhook_id`` is stable for the message across retries and replays
    (receivers use it to drop duplicates); ``created_at`` is the publication
    time (UTC).
    """

    id: int
    event_type: str
    payload: Mapping[str, Any]
    created_at: datetime
    webhook_id: str
    dedupe_key: str | None = None


#: Payload fields that name what a message is about, in order of preference.
TITLE_KEYS = ("title", "summary", "name", "subject", "command")


def message_title(message: OutboxMessage) -> str:
    """``event.created: Team meeting`` — the type and the payload's title-like field, if it has one.

    For targets that show a message to people (chat channels); escape it for the target's markup.
    """
    payload = message.payload if isinstance(message.payload, Mapping) else {}
    for key in TITLE_KEYS:
        value = payload.get(key)
        if isinstance(value, str) and value.strip():
            return f"{message.event_type}: {value.strip()}"
    return message.event_type


def value_text(value: Any) -> str:
    """A payload value as text: strings as they are, None as empty, anything else as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


@dataclass(frozen=True)
class Delivery:
    """What a target is asked to deliver: the message and the attempt number (1 = first)."""

    id: int
    message: OutboxMessage
    attempt: int
    target: str


DeliveryOutcome = Literal["delivered", "retry", "failed", "gone"]


@dataclass(frozen=True)
class DeliveryResult:
    """A target's answer to one attempt.

    - ``delivered``: done.
    - ``retry``: a temporary failure (timeout, connection refused, 5xx, 408,
      425, 429); tried again on the retry schedule, or after ``retry_after``
      seconds when that is later (a Retry-After header).
    - ``failed``: a permanent refusal (a 400); the delivery goes to the dead
      letters at once, where an operator can inspect and replay it.
    - ``gone``: the destination no longer exists (410 Gone): the delivery goes
      to the dead letters and the subscriber is disabled (a webhook endpoint)
      or reported (a plugin target) until someone re-enables it.

    ``status_code``, ``detail`` and ``response_excerpt`` are recorded with the
    attempt (never put secrets in them).
    """

    outcome: DeliveryOutcome
    retry_after: float | None = None
    status_code: int | None = None
    detail: str = ""
    response_excerpt: str = ""

    @classmethod
    def delivered(cls, status_code: int | None = None, response_excerpt: str = "") -> DeliveryResult:
        return cls("delivered", status_code=status_code, response_excerpt=response_excerpt)

    @classmethod
    def retry(cls, detail: str, *, after: float | None = None, status_code: int | None = None) -> DeliveryResult:
        return cls("retry", retry_after=after, status_code=status_code, detail=detail)

    @classmethod
    def failed(cls, detail: str, *, status_code: int | None = None) -> DeliveryResult:
        return cls("failed", status_code=status_code, detail=detail)

    @classmethod
    def gone(cls, detail: str, *, status_code: int | None = None) -> DeliveryResult:
        return cls("gone", status_code=status_code, detail=detail)


class DeliveryTarget(ABC):
    """A destination the outbox delivers to (a chat channel, an automation hook).

    Register instances with the ``register_delivery_targets`` hook; ``name``
    (lower-case, unique) names the target in deliveries, metrics and dead
    letters. ``event_types`` are the filters the target subscribes to (exact
    types, ``prefix.*`` or ``*``); override :meth:`accepts` for more.

    The outbox calls :meth:`deliver` once per attempt, never twice at once for
    one delivery, from the dispatcher job (at-least-once: a crash after a
    send but before the outcome is stored sends again; use
    ``delivery.message.webhook_id`` to deduplicate where the destination can).
    Raising counts as ``retry``. ``deliver`` must bound its own time (use
    ``chronos.plugin.outbound_client`` for HTTP: it refuses private
    addresses, caps the response and times out).

    Retries and dead letters: a ``retry`` answer is tried again on the
    outbox's schedule (``webhooks.retry_schedule_seconds``, Standard Webhooks'
    by default, with jitter; a later ``retry_after`` wins); after the last
    attempt, or on ``failed`` or ``gone``, the delivery is a dead letter:
    listed by ``GET /api/v1/outbox/dead`` and ``chronos outbox list``,
    replayed by ``POST /api/v1/outbox/dead/{id}/replay`` (same message and
    ``webhook_id``), purged by ``chronos outbox purge-dead --older-than 30d``.

    Example::

        class TelegramTarget(DeliveryTarget):
            name = "telegram"
            event_types = ("command.failed", "sync.failed")

            async def deliver(self, delivery):
                r = await client.post(url, json={"text": render(delivery.message)})
                if r.status_code == 429:
                    return DeliveryResult.retry("rate limited", after=float(r.headers.get("retry-after", 30)))
                return DeliveryResult.delivered(r.status_code) if r.is_success else DeliveryResult.failed(r.text[:200])

        @hookimpl
        def register_delivery_targets(ctx):
            return [TelegramTarget()]
    """

    name: ClassVar[str]
    event_types: ClassVar[tuple[str, ...]] = ("*",)

    def accepts(self, event_type: str) -> bool:
        """Whether this target wants messages of ``event_type``."""
        return any(type_matches(p, event_type) for p in self.event_types)

    @abstractmethod
    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        """Attempt one delivery and say how it went."""


@dataclass(frozen=True)
class Publication:
    """One message to publish with :meth:`Outbox.enqueue_many`."""

    event_type: str
    payload: Mapping[str, Any]
    dedupe_key: str | None = None
    calendar_id: str | None = None


class Outbox(ABC):
    """The transactional outbox (provided by the ``webhooks`` plugin).

    ``enqueue`` and ``enqueue_many`` write with the caller's ``session``
    only: the messages commit or roll back with the caller's change. A
    ``dedupe_key`` makes a second publication with the same key a no-op
    (for producers that may run twice for one change). ``calendar_id``
    lets subscribers filter by calendar. Unknown event types raise
    ``ValueError`` (a programming error, not user input).

    Cost: one INSERT per message, no reads; an empty ``enqueue_many`` does
    nothing. The dispatcher is woken after the caller's commit.
    """

    @abstractmethod
    async def enqueue(
        self,
        session: AsyncSession,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        dedupe_key: str | None = None,
        calendar_id: str | None = None,
    ) -> None:
        """Publish one message in the caller's transaction."""

    async def enqueue_many(self, session: AsyncSession, messages: Sequence[Publication]) -> None:
        """Publish several messages in the caller's transaction (one statement where possible)."""
        for m in messages:
            await self.enqueue(session, m.event_type, m.payload, dedupe_key=m.dedupe_key, calendar_id=m.calendar_id)

    async def subscribed(self, session: AsyncSession, event_type: str, calendar_id: str | None = None) -> bool:
        """Whether anyone takes ``event_type`` now: an enabled endpoint or a delivery target whose
        filters match it (and ``calendar_id``; None: any calendar). A producer of many messages may
        ask first and skip building what nobody would receive — the dispatcher drops those anyway.
        An outbox that cannot tell answers True."""
        return True

    @abstractmethod
    def event_types(self) -> Mapping[str, EventType]:
        """Every declared event type, by name."""


# -- inbound: requests signed with a shared secret instead of an API key ----------------------


@dataclass(frozen=True)
class SignedCall:
    """A verified signed request: who sent it and its webhook id (None when it carries none)."""

    principal: Principal
    webhook_id: str | None


@dataclass(frozen=True)
class SignedAnswer:
    """The first answer to a signed request, given again to a replay of the same webhook id."""

    status_code: int
    body: bytes
    media_type: str


class SignedRequests(ABC):
    """Authenticates callers that sign requests (Standard Webhooks or ``X-Signature``) instead of sending a key.

    Provided by the ``webhooks`` plugin from its configured inbound clients.
    The kernel asks it when a request carries no API key but a
    ``webhook-signature`` or ``X-Signature`` header; the principal it returns
    has the scopes and command systems configured for that client, so routes
    authorise it like a key. Each webhook id is accepted once per client: the
    kernel stores the first answer (:meth:`remember`) and answers a replay
    with it (:meth:`claim`).
    """

    @abstractmethod
    async def authenticate(self, headers: Mapping[str, str], body: bytes) -> SignedCall:
        """Verify the signature over ``body`` (constant-time) and the timestamp (±5 minutes by default);
        raise ``NotAuthenticated`` with a one-line reason otherwise."""

    @abstractmethod
    async def claim(self, call: SignedCall) -> SignedAnswer | None:
        """Reserve ``call.webhook_id``: None the first time, the stored answer for a replay;
        ``Conflict`` while the first request is still being answered."""

    @abstractmethod
    async def remember(self, call: SignedCall, answer: SignedAnswer) -> None:
        """Store the first answer (an answer of 500 or more releases the id: the client may try again)."""
