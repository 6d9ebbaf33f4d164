"""The calendar command syntax: an entry's title (and description) decides what it is.

Pure functions, no I/O. :func:`parse_entry` turns a title into a note, a link,
an action, a :class:`NotTaken` (a near miss or an invalid command, with the
reason to show in the event's ``command_hint`` metadata) or ``None`` (an
ordinary event).

Rules (the first token of the title decides, case-insensitively):

* ``NOTIZ: <text>`` or ``NOTE: <text>`` -> a note.
* ``URL: <url> [title]`` -> a link; http and https only.
* ``ACTION: <COMMAND> <TARGET> [args...]`` -> a command: the name upper-cased,
  the target kept as written, ``key=value`` tokens as params, other tokens as
  positional args. Double quotes group words (``msg="hello world"``). A fenced
  JSON block in the description (```` ```json ... ``` ````) may add params.

The colon must follow the word directly and be followed by whitespace:
``Notiz:x`` and ``notiz : x`` are not commands.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

#: Keyword -> kind of entry.
KEYWORDS = {"NOTIZ": "note", "NOTE": "note", "URL": "link", "ACTION": "action"}

MAX_TEXT = 4000
MAX_URL = 2048
MAX_JSON_BLOCK = 16_384

COMMAND_RE = re.compile(r"^[A-Z][A-Z0-9_.-]{0,63}$")
SYSTEM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PARAM_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")

_STRICT = re.compile(r"^\s*(?P<kw>notiz|note|url|action):(?P<rest>\s.*)$", re.IGNORECASE | re.DOTALL)
# Anything that looks like a keyword followed by some colon: candidates for a hint.
_NEAR = re.compile(
    r"^\s*(?P<kw>notiz|note|url|action)(?P<pre>\s*)(?P<colon>[:\uff1a\ufe55\ua789])(?P<post>\s*)(?P<rest>.*)$",
    re.IGNORECASE | re.DOTALL,
)
_FENCE = re.compile(r"```[ \t]*(?P<info>[A-Za-z0-9_-]*)[ \t]*\r?\n(?P<body>.*?)```", re.DOTALL)
_QUOTES = {'"': '"', "\u201c": "\u201d", "\u201e": "\u201c"}


@dataclass(frozen=True)
class NoteEntry:
    """``NOTIZ: <text>``: ``content`` is the text after the keyword."""

    content: str
    description: str | None = None


@dataclass(frozen=True)
class LinkEntry:
    """``URL: <url> [title]``."""

    url: str
    title: str
    description: str | None = None


@dataclass(frozen=True)
class ActionEntry:
    """``ACTION: <COMMAND> <TARGET> [args...]``.

    ``normalized`` is the action in a canonical spelling (keyword and command
    upper-cased, whitespace collapsed, quotes resolved, description params as
    sorted JSON): two entries that mean the same command have the same text.
    """

    command: str
    target: str
    params: dict[str, Any] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    normalized: str = ""


@dataclass(frozen=True)
class NotTaken:
    """An entry that looks like a command but is not taken.

    ``status`` is ``"ignored"`` for a near miss in the syntax (the entry is an
    ordinary event) and ``"rejected"`` for a command with invalid content.
    """

    kind: str
    status: str
    reason: str

    def hint(self) -> dict[str, str]:
        """The event's ``command_hint`` metadata."""
        return {"status": self.status, "kind": self.kind, "reason": self.reason}


Entry = NoteEntry | LinkEntry | ActionEntry | NotTaken


def parse_entry(title: str | None, description: str | None = None) -> Entry | None:
    """Classify a calendar entry by its title; ``None`` for an ordinary event."""
    if not title:
        return None
    strict = _STRICT.match(title)
    if strict is None:
        return _near_miss(title)
    keyword = strict.group("kw").upper()
    kind = KEYWORDS[keyword]
    rest = strict.group("rest").strip()
    if not rest:
        return NotTaken(kind, "ignored", f"nothing follows '{keyword}:'")
    if len(rest) > MAX_TEXT:
        return NotTaken(kind, "rejected", f"the text after '{keyword}:' is longer than {MAX_TEXT} characters")
    desc = description if description and description.strip() else None
    if kind == "note":
        return NoteEntry(rest, desc)
    if kind == "link":
        return _link(title, rest, desc)
    return _action(rest, description)


def _near_miss(title: str) -> NotTaken | None:
    near = _NEAR.match(title)
    if near is None:
        return None
    written = near.group("kw")
    keyword = written.upper()
    kind = KEYWORDS[keyword]
    colon = near.group("colon")
    if near.group("pre"):
        reason = f"'{written} {colon}' has a space before the colon; write '{keyword}: ...'"
    elif colon != ":":
        reason = f"'{written}{colon}' uses {colon!r} (U+{ord(colon):04X}) instead of ':'; write '{keyword}: ...'"
    elif not near.group("rest").strip():
        reason = f"nothing follows '{keyword}:'"
    else:
        reason = f"'{written}:' needs a space after the colon; write '{keyword}: ...'"
    return NotTaken(kind, "ignored", reason)


def _link(title: str, rest: str, description: str | None) -> Entry:
    # Any whitespace separates the URL from the title, not only a space.
    parts = rest.split(None, 1)
    url = parts[0]
    label = parts[1].strip() if len(parts) > 1 else ""
    problem = check_url(url)
    if problem:
        return NotTaken("link", "rejected", problem)
    return LinkEntry(url, label or title.strip(), description)


def check_url(url: str) -> str | None:
    """Why ``url`` is not an acceptable link, or ``None``."""
    if len(url) > MAX_URL:
        return f"the URL is longer than {MAX_URL} characters"
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        return "the URL contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        return f"the URL is malformed ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return "only http and https URLs are accepted"
    if not host:
        return "the URL has no host"
    return None


def tokenize(text: str) -> list[str]:
    """Split on whitespace; double quotes (also typographic ones) group words.

    Inside quotes a backslash escapes the next character. An unclosed quote
    raises ``ValueError``.
    """
    tokens: list[str] = []
    current: list[str] = []
    in_token = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _QUOTES:
            closing = _QUOTES[ch]
            in_token = True
            i += 1
            while True:
                if i >= n:
                    raise ValueError("a quote is not closed")
                c = text[i]
                if c == "\\" and i + 1 < n:
                    current.append(text[i + 1])
                    i += 2
                    continue
                if c == closing:
                    i += 1
                    break
                current.append(c)
                i += 1
            continue
        if ch.isspace():
            if in_token:
                tokens.append("".join(current))
                current, in_token = [], False
            i += 1
            continue
        current.append(ch)
        in_token = True
        i += 1
    if in_token:
        tokens.append("".join(current))
    return tokens


def description_params(description: str | None) -> dict[str, Any] | None:
    """Params from the first fenced block (```` ```json ```` or unlabelled) in ``description``.

    ``None`` when there is no such block; ``ValueError`` when the block is
    not a JSON object.
    """
    if not description:
        return None
    for match in _FENCE.finditer(description):
        if match.group("info").lower() not in ("", "json"):
            continue
        body = match.group("body").strip()
        if match.group("info") == "" and not body.startswith("{"):
            continue
        if len(body) > MAX_JSON_BLOCK:
            raise ValueError(f"the JSON block in the description is longer than {MAX_JSON_BLOCK} characters")
        try:
            value = json.loads(body)
        except ValueError as exc:
            raise ValueError(f"the JSON block in the description is not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise ValueError("the JSON block in the description must be a JSON object")
        return value
    return None


def _canonical_token(token: str) -> str:
    # Bare tokens never hold whitespace or quotes, so quoting those that do keeps
    # the text unambiguous: msg="a b" and msg=a b normalise differently.
    if not token or any(c.isspace() or c in _QUOTES or c in "\u201d\\" for c in token):
        return json.dumps(token, ensure_ascii=False)
    return token


def _action(rest: str, description: str | None) -> Entry:
    try:
        tokens = tokenize(rest)
    except ValueError as exc:
        return NotTaken("action", "rejected", f"cannot split the action: {exc}")
    if len(tokens) < 2:
        return NotTaken(
            "action", "rejected", "ACTION needs a command and a target: 'ACTION: <COMMAND> <TARGET> [args...]'"
        )
    command, target = tokens[0].upper(), tokens[1]
    if not COMMAND_RE.match(command):
        return NotTaken(
            "action",
            "rejected",
            f"command {tokens[0]!r} is invalid: a letter, then letters, digits, '_', '.', '-' (at most 64)",
        )
    if not SYSTEM_RE.match(target):
        return NotTaken(
            "action",
            "rejected",
            f"target {target!r} is invalid: letters, digits, '.', '_', '-' (at most 64, starting with a letter or digit)",
        )
    params: dict[str, Any] = {}
    args: list[str] = []
    for token in tokens[2:]:
        key, eq, value = token.partition("=")
        if eq and PARAM_KEY_RE.match(key):
            if key in params:
                return NotTaken("action", "rejected", f"param {key!r} is given twice")
            params[key] = value
        else:
            args.append(token)
    try:
        extra = description_params(description)
    except ValueError as exc:
        return NotTaken("action", "rejected", str(exc))
    if extra:
        clash = sorted(set(extra) & set(params))
        if clash:
            return NotTaken("action", "rejected", f"param {clash[0]!r} is given in both the title and the description")
        params.update(extra)
    normalized = "ACTION: " + " ".join(_canonical_token(t) for t in [command, *tokens[1:]])
    if extra:
        normalized += " " + json.dumps(extra, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return ActionEntry(command, target, params, tuple(args), normalized)
