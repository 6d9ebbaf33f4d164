"""Grandfather-father-son retention: which archives stay, which go, and why."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Dated:
    id: str
    created_at: datetime
    verified: bool = False


def plan(archives: Iterable[Dated], *, daily: int, weekly: int, monthly: int) -> tuple[dict[str, list[str]], list[str]]:
    """(kept id -> reasons, ids to delete). The newest archive of each of the newest ``daily`` days,
    ``weekly`` ISO weeks and ``monthly`` months stays, and so does the newest verified archive."""
    ordered = sorted(archives, key=lambda a: (a.created_at, a.id), reverse=True)
    keep: dict[str, list[str]] = {}
    for label, count, period in (
        ("daily", daily, lambda d: d.date().isoformat()),
        ("weekly", weekly, lambda d: "{:04d}-W{:02d}".format(*d.isocalendar()[:2])),
        ("monthly", monthly, lambda d: d.strftime("%Y-%m")),
    ):
        seen: list[str] = []
        for a in ordered:
            key = period(a.created_at)
            if key in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(key)
            keep.setdefault(a.id, []).append(f"{label} {key}")
    newest_verified = next((a for a in ordered if a.verified), None)
    if newest_verified is not None:
        keep.setdefault(newest_verified.id, []).append("newest verified")
    return keep, [a.id for a in ordered if a.id not in keep]
