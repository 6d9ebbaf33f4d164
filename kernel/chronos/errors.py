"""RFC 9457 problem details for every error the HTTP API returns."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from chronos.db.engine import storage_failure
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
from chronos.routes import effective_routes

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = structlog.get_logger("chronos.errors")

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(Exception):
    """Raise to answer with ``application/problem+json``.

    ``type`` is a short slug (``"not-found"``) expanded to a URN; ``extra`` adds
    members such as ``errors`` or a conflicting entity's id.
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type
        self.title = title or _TITLES.get(status, "Error")
        self.headers = headers or {}
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        slug = self.type or self.title.lower().replace(" ", "-")
        out: dict[str, Any] = {
            "type": f"urn:chronos:problem:{slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            out["instance"] = instance
        out.update(self.extra)
        return out


#: The HTTP status of each kind of domain error.
STATUS_OF: dict[type[ChronosError], int] = {
    MalformedInput: 400,
    NotAuthenticated: 401,
    NotPermitted: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    InvalidInput: 422,
    Busy: 429,
    Unavailable: 503,
}


def problem_from(exc: ChronosError) -> Problem:
    """The problem answer for a domain error (its kind decides the status)."""
    status = next((code for kind, code in STATUS_OF.items() if isinstance(exc, kind)), 400)
    headers: dict[str, str] = {}
    if isinstance(exc, NotAuthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="chronos"'
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    extra = dict(exc.extra)
    if exc.errors is not None:
        extra["errors"] = exc.errors
    return Problem(status, exc.detail, type=exc.type, headers=headers, **extra)


class ProblemModel(BaseModel):
    """OpenAPI shape of an error response."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


def problem_response(problem: Problem, request: Request | None = None) -> JSONResponse:
    instance = request.url.path if request is not None else None
    return JSONResponse(
        problem.body(instance),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=problem.headers,
    )


def _pointer(loc: tuple[Any, ...]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        where = parts.pop(0)
        prefix = "" if where == "body" else f"/{where}"
    else:
        prefix = ""
    escaped = [str(p).replace("~", "~0").replace("/", "~1") for p in parts]
    return prefix + ("/" + "/".join(escaped) if escaped else "")


def validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        out.append(
            {
                "pointer": _pointer(loc),
                "location": loc[0] if loc else "body",
                "detail": err.get("msg", "invalid"),
                "type": err.get("type", "invalid"),
            }
        )
    return out


def _allowed_methods(request: Request) -> set[str]:
    path = request.scope.get("path", "")
    methods: set[str] = set()
    for route in effective_routes(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return methods


class ReplayedAnswer(Exception):
    """A signed request whose webhook id was answered before: the first answer, again."""

    def __init__(self, status_code: int, body: bytes, media_type: str) -> None:
        super().__init__(f"replay of an answered request ({status_code})")
        self.status_code, self.body, self.media_type = status_code, body, media_type


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ReplayedAnswer)
    async def _replayed(request: Request, exc: ReplayedAnswer) -> Response:
        return Response(exc.body, exc.status_code, media_type=exc.media_type, headers={"Webhook-Replayed": "true"})

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(ChronosError)
    async def _domain(request: Request, exc: ChronosError) -> JSONResponse:
        return problem_response(problem_from(exc), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "Error")
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"No resource at {request.url.path}"
        headers = dict(exc.headers or {})
        if exc.status_code == 400 and detail == "There was an error parsing the body":
            # FastAPI's answer to a body it cannot even decode (not UTF-8, say).
            detail = "The request body could not be read as JSON (is it UTF-8 encoded?)"
            return problem_response(
                Problem(
                    400,
                    detail,
                    type="malformed-body",
                    errors=[{"pointer": "", "location": "body", "detail": detail, "type": "body_undecodable"}],
                ),
                request,
            )
        if exc.status_code == 405:
            if detail == "Method Not Allowed":
                detail = f"{request.method} is not allowed on {request.url.path}"
            allowed = _allowed_methods(request)
            if allowed:
                # Starlette lists only the methods of the first matching route.
                headers["Allow"] = ", ".join(sorted(allowed))
        return problem_response(Problem(exc.status_code, detail, headers=headers), request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(list(exc.errors()))
        # A body that is not JSON at all is a malformed request, not a schema miss.
        invalid = [e for e in exc.errors() if e.get("type") == "json_invalid"]
        if invalid:
            # The location of a decode error is a character offset, not a JSON pointer.
            reason = (invalid[0].get("ctx") or {}).get("error", "invalid JSON")
            offset = invalid[0].get("loc", ("body", 0))[-1]
            detail = f"The request body is not valid JSON: {reason} at character {offset}"
            return problem_response(
                Problem(
                    400,
                    detail,
                    type="malformed-body",
                    errors=[{"pointer": "", "location": "body", "detail": detail, "type": "json_invalid"}],
                ),
                request,
            )
        summary = "; ".join(f"{e['pointer'] or '/'}: {e['detail']}" for e in errors[:5])
        return problem_response(
            Problem(422, f"The request is invalid: {summary}", type="validation", errors=errors),
            request,
        )

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        return unhandled_response(request, exc)


def _unstorable_text(exc: BaseException) -> bool:
    """Whether the database refused a text value it cannot store (PostgreSQL and a NUL character)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ in ("CharacterNotInRepertoireError", "UntranslatableCharacterError"):
            return True
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
    return False


#: The answers to a database that cannot take the request: the operator's to fix, the client's to retry.
STORAGE_PROBLEMS = {
    "full": lambda: Problem(
        503,
        "Storage full: the disk holding the database has no space left, so nothing of this request was"
        " stored. Reads keep working. Free space on that volume (or grow it), then retry.",
        type="storage-full",
        headers={"Retry-After": "60"},
    ),
    "unreachable": lambda: Problem(
        503,
        "The database cannot be reached right now (connection refused or dropped, or the server is"
        " restarting); the request may not have been applied. Retry shortly, with the same"
        " Idempotency-Key where the route takes one.",
        type="database-unavailable",
        headers={"Retry-After": "5"},
    ),
}


def unhandled_response(request: Request, exc: BaseException) -> JSONResponse:
    """Log an uncaught exception (with the request id) and answer 500 without internals.

    One database refusal is the client's to fix, whichever field it came from:
    PostgreSQL stores no NUL character (``\u0000``) in text, so such a value is a 422.
    A database that is unreachable or whose disk is full is a 503 saying so, not a 500.
    """
    if _unstorable_text(exc):
        return problem_response(
            Problem(
                422,
                "A text value holds a character the database cannot store (NUL, \\u0000); remove it",
                type="unstorable-text",
            ),
            request,
        )
    failure = storage_failure(exc)
    if failure is not None:
        log.warning("storage_failure", path=request.url.path, failure=failure, error_type=type(exc).__name__)
        return problem_response(STORAGE_PROBLEMS[failure](), request)
    log.error("unhandled_error", path=request.url.path, error_type=type(exc).__name__, exc_info=exc)
    return problem_response(
        Problem(500, "An internal error occurred; it has been logged with this request's id."),
        request,
    )
