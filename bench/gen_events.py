"""Deterministic synthetic calendar events for the benchmarks.

``iter_events(n, seed)`` yields the same ``n`` events for the same arguments on
every machine: plain dicts with ``uid, calendar_id, title, description,
location, start, end, all_day, tags`` (``start``/``end`` aware UTC datetimes,
``end`` exclusive; all-day events start and end at UTC midnight). Words are
drawn from a Zipf-like distribution (weight 1/rank), so a few terms are very
common ("meeting", "review") and most are rare — which is what full-text
queries over real calendars see.

``write_ics(path, n, seed)`` writes the same events as one RFC 5545 file
(folded lines, escaped text, ``CATEGORIES`` for tags, ``VALUE=DATE`` for
all-day events).

Usage::

    python bench/gen_events.py out.ics 100000
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path

# The window every generated event falls into: `years` years from this start.
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)

_ACTIVITIES = [
    "meeting",
    "review",
    "sync",
    "standup",
    "planning",
    "retro",
    "call",
    "interview",
    "workshop",
    "demo",
    "onboarding",
    "lunch",
    "training",
    "deploy",
    "release",
    "audit",
    "checkup",
    "appointment",
    "presentation",
    "briefing",
    "handover",
    "kickoff",
    "brainstorm",
    "offsite",
    "conference",
    "webinar",
    "dinner",
    "gym",
    "dentist",
    "haircut",
    "pickup",
    "delivery",
    "inspection",
    "maintenance",
    "backup",
    "migration",
    "rollout",
    "hotfix",
    "incident",
    "postmortem",
    "budget",
    "forecast",
    "payroll",
    "invoice",
    "renewal",
    "celebration",
    "birthday",
    "anniversary",
    "farewell",
    "hackathon",
    "office-hours",
    "mentoring",
    "coaching",
    "tutoring",
    "rehearsal",
    "concert",
    "recital",
    "match",
    "practice",
    "tournament",
    "trip",
    "flight",
    "train",
]

_SUBJECTS = [
    "team",
    "project",
    "client",
    "product",
    "design",
    "marketing",
    "sales",
    "support",
    "backend",
    "frontend",
    "infra",
    "security",
    "data",
    "finance",
    "legal",
    "hr",
    "board",
    "quarterly",
    "weekly",
    "monthly",
    "roadmap",
    "platform",
    "mobile",
    "web",
    "api",
    "database",
    "network",
    "billing",
    "search",
    "analytics",
    "customer",
    "vendor",
    "partner",
    "investor",
    "hiring",
    "ops",
    "research",
    "compliance",
    "privacy",
    "accessibility",
    "performance",
    "reliability",
    "observability",
    "documentation",
    "localization",
    "pricing",
    "growth",
    "retention",
    "churn",
    "launch",
    "beta",
    "alpha",
    "pilot",
    "prototype",
    "migration",
    "kubernetes",
    "postgres",
    "redis",
    "kafka",
    "terraform",
    "ansible",
    "grafana",
    "prometheus",
    "nginx",
    "django",
    "react",
    "typescript",
    "rust",
    "golang",
    "python",
    "java",
    "swift",
    "kotlin",
    "android",
    "ios",
    "windows",
    "linux",
    "macos",
    "firmware",
]

_NAMES = [
    "Anna",
    "Ben",
    "Clara",
    "David",
    "Emma",
    "Felix",
    "Greta",
    "Hannah",
    "Ivan",
    "Julia",
    "Karl",
    "Lena",
    "Max",
    "Nina",
    "Oskar",
    "Paula",
    "Quentin",
    "Rosa",
    "Simon",
    "Tina",
    "Ulrich",
    "Vera",
    "Walter",
    "Xenia",
    "Yusuf",
    "Zoe",
    "Amir",
    "Bea",
    "Carlos",
    "Dana",
    "Elif",
    "Farid",
    "Gina",
    "Hugo",
    "Ines",
    "Jonas",
    "Kim",
    "Lars",
    "Mia",
    "Noah",
    "Olga",
    "Pia",
    "Rafael",
    "Sara",
    "Theo",
    "Uma",
    "Viktor",
    "Wanda",
]

_FILLER = [
    "the",
    "a",
    "to",
    "and",
    "of",
    "for",
    "with",
    "on",
    "in",
    "about",
    "next",
    "steps",
    "notes",
    "agenda",
    "please",
    "bring",
    "prepare",
    "discuss",
    "update",
    "status",
    "open",
    "questions",
    "decision",
    "follow-up",
    "action",
    "items",
    "owner",
    "deadline",
    "draft",
    "final",
    "version",
    "share",
    "slides",
    "document",
    "link",
    "feedback",
    "blocker",
    "risk",
    "dependency",
    "estimate",
    "scope",
    "priority",
    "timeline",
    "milestone",
    "goal",
    "metric",
    "target",
    "result",
    "summary",
    "context",
    "background",
    "proposal",
    "option",
    "tradeoff",
    "cost",
    "benefit",
    "impact",
    "customer",
    "request",
    "issue",
    "ticket",
    "bug",
    "fix",
    "test",
    "coverage",
    "release",
    "note",
    "changelog",
    "migration",
    "plan",
    "rollback",
    "window",
    "downtime",
    "capacity",
    "latency",
    "throughput",
    "error",
    "budget",
    "alert",
    "dashboard",
    "report",
    "review",
    "approve",
    "sign-off",
    "zeitplan",
    "besprechung",
    "protokoll",
    "aufgabe",
    "termin",
    "erinnerung",
    "rechnung",
    "vertrag",
    "angebot",
]

_PLACES = [
    "Room 1.01",
    "Room 2.14",
    "Room 3.07",
    "Main Hall",
    "Cafeteria",
    "Board Room",
    "Lab A",
    "Lab B",
    "Garage",
    "Berlin Office",
    "Munich Office",
    "Hamburg Office",
    "Vienna Office",
    "Zurich Office",
    "Online",
    "Zoom",
    "Google Meet",
    "Teams",
    "Client Site",
    "Coworking Space",
    "Home",
    "Gym",
    "Dentist Dr. Weber",
    "Train Station",
    "Airport BER",
    "Hotel Adlon",
    "Conference Center",
    "Library",
    "Park",
    "Stadium",
]

_TAGS = ["work", "private", "urgent", "deploy", "ops", "family", "health", "travel", "finance", "learning"]


def _zipf(words: list[str]) -> tuple[list[str], list[float]]:
    """Words with cumulative 1/rank weights (for ``random.choices(cum_weights=…)``)."""
    return words, list(accumulate(1.0 / (rank + 1) for rank in range(len(words))))


_A = _zipf(_ACTIVITIES)
_S = _zipf(_SUBJECTS)
_N = _zipf(_NAMES)
_F = _zipf(_FILLER)
_P = _zipf(_PLACES)
_T = _zipf(_TAGS)

# Meeting lengths in minutes with realistic weights (30 and 60 dominate).
_DURATIONS = ([15, 30, 45, 60, 90, 120, 180, 240, 480], list(accumulate([4, 30, 8, 30, 8, 10, 4, 3, 3])))


def _pick(rng: random.Random, table: tuple[list[str], list[float]], k: int = 1) -> list[str]:
    return rng.choices(table[0], cum_weights=table[1], k=k)


def _randint(rng: random.Random, lo: int, hi: int) -> int:
    # random() is several times cheaper than randint() and just as deterministic.
    return lo + int(rng.random() * (hi - lo + 1))


def _randrange(rng: random.Random, stop: int) -> int:
    return int(rng.random() * stop)


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    words = _pick(rng, _F, _randint(rng, lo, hi))
    words[0] = words[0].capitalize()
    return " ".join(words) + "."


def iter_events(n: int, seed: int = 1, calendars: int = 20, years: int = 3) -> Iterator[dict]:
    """Yield ``n`` deterministic synthetic events (see the module docstring).

    Events spread uniformly over ``years`` years from 2025-01-01 UTC, across
    ``calendars`` calendars named ``cal-01`` … ``cal-NN``, in uid order
    (``evt-<seed>-<index>``), not in time order.
    """
    rng = random.Random(seed)
    span_minutes = years * 365 * 24 * 60
    width = max(2, len(str(calendars)))
    calendar_ids = [f"cal-{i + 1:0{width}d}" for i in range(calendars)]
    for index in range(n):
        activity = _pick(rng, _A)[0]
        subject = _pick(rng, _S)[0]
        roll = rng.random()
        if roll < 0.25:
            title = f"{subject.capitalize()} {activity} with {_pick(rng, _N)[0]}"
        elif roll < 0.5:
            title = f"{activity.capitalize()}: {subject} {_pick(rng, _S)[0]}"
        else:
            title = f"{subject.capitalize()} {activity}"
        tags: list[str] = []
        if rng.random() < 0.3:
            tags = sorted(set(_pick(rng, _T, _randint(rng, 1, 2))))
        if rng.random() < 0.1:
            title += " #" + _pick(rng, _T)[0]
        parts = [_sentence(rng, 4, 14) for _ in range(_randint(rng, 0, 3))]
        if rng.random() < 0.15:
            parts.append(
                "\n".join(
                    f"[{'x' if rng.random() < 0.4 else ' '}] {' '.join(_pick(rng, _F, _randint(rng, 2, 5)))}"
                    for _ in range(_randint(rng, 1, 4))
                )
            )
        description = "\n".join(parts)
        location = _pick(rng, _P)[0] if rng.random() < 0.7 else ""
        all_day = rng.random() < 0.08
        if all_day:
            day = EPOCH + timedelta(days=_randrange(rng, years * 365))
            start = day
            end = day + timedelta(days=1 if rng.random() < 0.8 else _randint(rng, 2, 5))
        else:
            # Business-hour-ish starts on a 15-minute grid.
            minute = _randrange(rng, span_minutes // 15) * 15
            start = EPOCH + timedelta(minutes=minute)
            if rng.random() < 0.85:
                start = start.replace(hour=6 + _randrange(rng, 12))
            end = start + timedelta(minutes=_pick(rng, _DURATIONS)[0])  # type: ignore[arg-type]
        yield {
            "uid": f"evt-{seed}-{index}",
            "calendar_id": calendar_ids[_randrange(rng, calendars)],
            "title": title,
            "description": description,
            "location": location,
            "start": start,
            "end": end,
            "all_day": all_day,
            "tags": tags,
        }


def _escape(text: str) -> str:
    return (
        text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\r\n", "\\n").replace("\n", "\\n")
    )


def _fold(line: str) -> str:
    """Fold a content line at 75 octets (RFC 5545 §3.1), never inside a UTF-8 sequence."""
    data = line.encode("utf-8")
    if len(data) <= 75:
        return line + "\r\n"
    out: list[str] = []
    chunk = ""
    size = 0
    limit = 75
    for char in line:
        width = len(char.encode("utf-8"))
        if size + width > limit:
            out.append(chunk)
            chunk, size, limit = "", 0, 74  # continuation lines start with a space
        chunk += char
        size += width
    out.append(chunk)
    return "\r\n ".join(out) + "\r\n"


def event_to_vevent(event: dict, stamp: str = "20250101T000000Z") -> str:
    """One generated event as a VEVENT block."""
    lines = ["BEGIN:VEVENT", f"UID:{event['uid']}", f"DTSTAMP:{stamp}"]
    if event["all_day"]:
        lines.append(f"DTSTART;VALUE=DATE:{event['start']:%Y%m%d}")
        lines.append(f"DTEND;VALUE=DATE:{event['end']:%Y%m%d}")
    else:
        lines.append(f"DTSTART:{event['start']:%Y%m%dT%H%M%SZ}")
        lines.append(f"DTEND:{event['end']:%Y%m%dT%H%M%SZ}")
    lines.append(f"SUMMARY:{_escape(event['title'])}")
    if event["description"]:
        lines.append(f"DESCRIPTION:{_escape(event['description'])}")
    if event["location"]:
        lines.append(f"LOCATION:{_escape(event['location'])}")
    if event["tags"]:
        lines.append("CATEGORIES:" + ",".join(_escape(t) for t in event["tags"]))
    lines.append("END:VEVENT")
    return "".join(_fold(line) for line in lines)


def write_ics(path: str | Path, n: int, seed: int = 1) -> Path:
    """Write ``iter_events(n, seed)`` as one VCALENDAR file; returns the path."""
    path = Path(path)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Chronos Engine//bench//EN\r\nCALSCALE:GREGORIAN\r\n")
        for event in iter_events(n, seed):
            fh.write(event_to_vevent(event))
        fh.write("END:VCALENDAR\r\n")
    return path


if __name__ == "__main__":  # pragma: no cover
    target = sys.argv[1] if len(sys.argv) > 1 else "events.ics"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    print(write_ics(target, count))
