"""The mail contracts: rendering email templates and queueing outgoing mail.

Two builtin plugins cooperate through these interfaces without importing each
other: ``templates`` provides :class:`TemplateRenderer`, ``mail`` provides
:class:`MailQueue`. Either may be disabled; a consumer checks
``ctx.has_service(Interface)`` and answers a clear problem when it is missing.

Every error type here is a domain error (:mod:`chronos.exceptions`), so a route
that lets one propagate answers ``application/problem+json`` with the status of
its kind (404, 409, 413, 422, 503) and JSON pointers in ``errors``.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from chronos.exceptions import ChronosError, Conflict, InvalidInput, NotFound, TooLarge, Unavailable

if TYPE_CHECKING:  # pragma: no cover
    from chronos.identity import Origin, Principal


# -- errors --------------------------------------------------------------------------


class TemplateNotFound(NotFound):
    """No template with that id or name (404)."""

    def __init__(self, ref: int | str) -> None:
        what = f"id {ref}" if isinstance(ref, int) else f"name {ref!r}"
        super().__init__(f"No template with {what}", type="template-not-found", template=ref)


class TemplateRenderError(InvalidInput):
    """A template could not be rendered with the given variables (422).

    ``errors`` holds one entry per problem, each with a JSON ``pointer`` into
    the caller's request (``/variables/name`` for a missing variable) and a
    ``detail``; template-side problems (a loop limit, an unsafe attribute)
    point at the template part (``/content/html``) and carry ``line``.
    """

    def __init__(
        self, detail: str, errors: list[dict[str, Any]] | None = None, *, type: str = "template-render"
    ) -> None:
        super().__init__(detail, type=type, errors=errors or [])
        self.errors: list[dict[str, Any]] = errors or []


class TemplateTypeMismatch(InvalidInput):
    """The template exists but is of another type than the caller needs (422)."""

    def __init__(self, ref: int | str, actual: str, expected: str) -> None:
        super().__init__(
            f"Template {ref!r} is a {actual} template; an {expected} template is needed",
            type="template-type",
            errors=[{"pointer": "/template_id", "detail": f"expected an {expected} template, got {actual}"}],
        )


class MailError(ChronosError):
    """Base of the mail queue's refusals (each also of a kind: 409, 413, 422 or 503)."""


class InvalidMail(MailError, InvalidInput):
    """The message is malformed: bad address, CR/LF in a header, bad base64 (422)."""

    def __init__(self, detail: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(detail, type="invalid-mail", errors=errors)
        self.errors: list[dict[str, Any]] = errors


class AttachmentsTooLarge(MailError, TooLarge):
    """The attachments together exceed the configured limit (413)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"Attachments total {size} bytes; the limit is {limit} bytes",
            type="attachments-too-large",
            size=size,
            limit=limit,
        )


class IdempotencyConflict(MailError, Conflict):
    """The Idempotency-Key was already used for a different request (409)."""

    def __init__(self, delivery_id: int) -> None:
        super().__init__(
            "This Idempotency-Key was already used with a different request body; use a new key",
            type="idempotency-conflict",
            delivery_id=delivery_id,
        )


class MailNotConfigured(MailError, Unavailable):
    """Mail cannot be queued because the ``mail`` section is incomplete (503)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, type="mail-not-configured")


# -- values --------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedEmail:
    """The output of an email template. ``text`` is None when the template has
    no text part (the mail queue then derives one from ``html``)."""

    template_id: int
    template_name: str
    subject: str
    html: str | None
    text: str | None


@dataclass(frozen=True)
class MailAttachment:
    """A file attached to a message; ``content`` is the decoded bytes."""

    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class OutgoingMail:
    """A message to queue. Addresses are ``"Name <addr@example.com>"`` or bare
    ``addr@example.com``; at least one recipient and one of ``html``/``text``."""

    to: list[str]
    subject: str
    html: str | None = None
    text: str | None = None
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    attachments: list[MailAttachment] = field(default_factory=list)
    template_id: int | None = None
    template_name: str | None = None

    def fingerprint(self) -> str:
        """A stable hash of the content (the default idempotency fingerprint)."""
        payload = {
            "to": self.to,
            "cc": self.cc,
            "bcc": self.bcc,
            "subject": self.subject,
            "html": self.html,
            "text": self.text,
            "template_id": self.template_id,
            "attachments": [
                [a.filename, a.content_type, hashlib.sha256(a.content).hexdigest()] for a in self.attachments
            ],
        }
        return request_fingerprint(payload)


@dataclass(frozen=True)
class QueuedDelivery:
    """A delivery in the mail queue. ``replayed`` is True when an earlier
    request with the same idempotency key created it."""

    id: int
    status: Literal["queued", "retrying", "sent", "failed"]
    message_id: str
    replayed: bool = False


def request_fingerprint(payload: Any) -> str:
    """SHA-256 over canonical JSON: equal request bodies give equal fingerprints."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# -- interfaces ----------------------------------------------------------------------


class TemplateRenderer(ABC):
    """Renders stored email templates (provided by the ``templates`` plugin).

    Rendering is sandboxed and bounded in time and output size; every failure
    a caller can cause raises :class:`TemplateNotFound`,
    :class:`TemplateTypeMismatch` or :class:`TemplateRenderError`.
    """

    @abstractmethod
    async def render_email(
        self, template: int | str, variables: Mapping[str, Any], *, pointer_prefix: str = "/variables"
    ) -> RenderedEmail:
        """Render the email template with id (int) or name (str).

        ``variables`` is validated against the template's ``variables_json``
        schema first; error pointers start with ``pointer_prefix``.
        """

    async def render_string(self, source: str, variables: Mapping[str, Any], *, native: bool = False) -> Any:
        """Render one small text template (not a stored one) with ``variables``.

        For plugins that let users write short templates of their own (a
        workflow's params, a subject line): the same sandbox, time and output
        budget and render pool as stored templates, so a template can neither
        escape nor block the event loop. Returns the text; with
        ``native=True`` a source that is exactly one ``{{ expression }}``
        returns the expression's value as JSON (a number, list, object, null…)
        instead. Raises :class:`TemplateRenderError` when the source does not
        compile, reads an undefined variable, does something unsafe, exceeds
        a limit or produces a non-JSON value (its ``errors`` carry ``detail``
        and ``kind``: undefined, unsafe, limit or error), ``Unavailable`` when
        the render pool stays saturated. The default raises
        ``NotImplementedError`` (a renderer for stored templates only).
        """
        raise NotImplementedError

    async def render_webhook(self, template: int | str, variables: Mapping[str, Any]) -> Any:
        """Render the stored webhook template with id (int) or name (str); returns its body as JSON.

        For the outbox's webhook endpoints that shape their body with a
        template (``data``, ``type``, ``timestamp`` and ``webhook_id`` are the
        variables). Raises :class:`TemplateNotFound`,
        :class:`TemplateTypeMismatch` (not a webhook template) or
        :class:`TemplateRenderError` (a missing variable, a body that is not
        JSON). The default raises ``NotImplementedError``.
        """
        raise NotImplementedError


class MailQueue(ABC):
    """Queues outgoing mail for background delivery (provided by ``mail``).

    ``enqueue`` validates the message (addresses, header injection, attachment
    size), stores it and wakes the sender; it never talks to the SMTP server
    itself. With an ``idempotency_key`` a repeated call with the same
    ``fingerprint`` returns the first delivery (``replayed=True``) and never
    sends twice; another fingerprint raises :class:`IdempotencyConflict`. Keys
    are namespaced by the principal's key id.
    """

    @abstractmethod
    async def enqueue(
        self,
        message: OutgoingMail,
        *,
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
        principal: Principal | None = None,
        origin: Origin | None = None,
    ) -> QueuedDelivery:
        """Store ``message`` as a ``queued`` delivery and return it.

        ``fingerprint`` defaults to ``message.fingerprint()``; pass a hash of
        the caller's request body instead when the message is rendered from
        a template (a template edited between retries must not cause a 409).
        ``principal`` and ``origin`` attribute the audit row.
        """

    @abstractmethod
    async def replay(
        self, idempotency_key: str, fingerprint: str, *, principal: Principal | None = None
    ) -> QueuedDelivery | None:
        """The delivery an earlier request with this key created, or None.

        Lets a caller skip expensive work (rendering) on a retry. Raises
        :class:`IdempotencyConflict` when the key was used for another body.
        """
