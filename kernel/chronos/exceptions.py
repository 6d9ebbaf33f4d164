"""Domain errors: what core code and plugins raise when they refuse something.

They say *what kind* of refusal it is, never how a transport reports it: the
HTTP layer (:mod:`chronos.errors`) turns each kind into its problem+json status,
the CLI into a one-line message. Raise the most specific kind::

    raise NotFound(f"No whitelist entry {entry_id}", type="whitelist-not-found")
    raise InvalidInput("Unknown system", errors=[{"pointer": "/system", "detail": "not whitelisted"}])

``type`` is a short slug (a problem type); ``errors`` carries one entry per bad
field with a JSON ``pointer``; any other keyword becomes an extra member of the
answer (a conflicting entity's id, a limit).
"""

from __future__ import annotations

from typing import Any


class ChronosError(Exception):
    """Base of every refusal a caller can act on."""

    #: Default problem type slug of the kind.
    default_type: str = "error"

    def __init__(
        self, detail: str, *, type: str | None = None, errors: list[dict[str, Any]] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.type = type or self.default_type
        self.errors = errors
        self.extra = extra


class MalformedInput(ChronosError):
    """The request cannot be read at all (a forged cursor, undecodable data)."""

    default_type = "bad-request"


class InvalidInput(ChronosError):
    """The input was read but is not acceptable; ``errors`` points at the fields."""

    default_type = "validation"


class NotFound(ChronosError):
    """The thing asked for does not exist (or the caller may not know it does)."""

    default_type = "not-found"


class Conflict(ChronosError):
    """The request clashes with the current state (a duplicate name, a reused key)."""

    default_type = "conflict"


class NotPermitted(ChronosError):
    """The caller is known but may not do this."""

    default_type = "forbidden"


class NotAuthenticated(ChronosError):
    """The caller could not be identified (missing, unknown or expired key)."""

    default_type = "unauthorized"


class TooLarge(ChronosError):
    """The input exceeds a configured size limit."""

    default_type = "too-large"


class Busy(ChronosError):
    """The work is already under way or the caller is over a rate; retry later."""

    default_type = "busy"

    def __init__(self, detail: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(detail, **kw)
        self.retry_after = retry_after


class Unavailable(ChronosError):
    """A dependency is missing or not configured (no mail server, plugin disabled)."""

    default_type = "unavailable"
