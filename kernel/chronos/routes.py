"""Walking the app's routes with their final paths."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def effective_routes(routes: Iterable[Any]) -> list[Any]:
    """Every route with its final path and dependencies.

    Recent FastAPI versions keep included routers nested (``_IncludedRouter``)
    instead of copying their routes into ``app.routes``; walking only the top
    level would miss every included route.
    """
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI flattens included routers itself
        return list(routes)
    return list(iter_route_contexts(list(routes)))
