"""Structured logging: one JSON object per line with request and plugin context."""

from __future__ import annotations

import logging
import re
import sys

import structlog
from structlog.typing import EventDict, Processor

from chronos.redact import redact_urls

_SECRET_KEYS = re.compile(r"(password|secret|token|authorization|api[_-]?key)", re.I)


def _redact(_logger: object, _name: str, event: EventDict) -> EventDict:
    for key in list(event):
        value = event[key]
        if _SECRET_KEYS.search(key) and value is not None:
            event[key] = "***"
        elif isinstance(value, str) and "://" in value:
            # A URL's path and query may be a secret (private feeds): only scheme and host are logged.
            event[key] = redact_urls(value)
    return event


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Standard-library loggers (uvicorn, alembic, sqlalchemy) go through the same renderer.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer, foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name]
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    for noisy in ("alembic", "apscheduler", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
