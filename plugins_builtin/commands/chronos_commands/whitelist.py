"""Whitelist rules and payload checks shared by every path that creates a command.

A whitelist entry allows one ``(system, action)`` pair and lists the params it
accepts. Each allowed param maps to ``None`` (any value), a regular expression
(``{"regex": "..."}`` or a bare string) or an enumeration (``{"enum": [...]}``
or a bare list). Patterns are compiled with RE2 (``google-re2``), whose
matching time is linear in the input: no pattern can make a match hang the
service, whatever its repeats. What RE2 cannot compile (back-references,
lookahead and lookbehind, conditionals) is refused when the entry is saved.
Patterns are capped in length and values are matched with ``fullmatch`` on
input capped in length.

An entry may also restrict which calendar ``sources`` and ``calendars`` may
create its commands from ``ACTION:`` entries (``None`` allows any).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Any

import re2

from chronos.plugin import InvalidInput

from chronos_commands.syntax import COMMAND_RE, PARAM_KEY_RE, SYSTEM_RE

MAX_PATTERN = 200
MAX_ENUM = 100
MAX_MATCH_INPUT = 256
MAX_GROUPS = 20
MAX_ORIGINS = 100
MAX_PARAMS = 50
MAX_PARAM_VALUE = 4000
MAX_ARGS = 50
MAX_ARG = 1000
MAX_PAYLOAD = 16_384
MAX_RESULT = 65_536
MAX_ERROR = 4000

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the client's 422, not a line on stderr


@dataclass(frozen=True)
class Violation:
    """One reason a command is refused: a JSON pointer into the request and why."""

    pointer: str
    detail: str

    def as_error(self) -> dict[str, str]:
        return {"pointer": self.pointer, "detail": self.detail, "type": "not-whitelisted"}


def refusal(
    violations: list[Violation],
    kind: str = "validation",
    lead: str = "The request is invalid",
) -> InvalidInput:
    """The 422 for ``violations``: the first one in the detail, all of them (typed ``kind``) in ``errors``."""
    first = violations[0]
    return InvalidInput(
        f"{lead}: {first.pointer}: {first.detail}",
        type=kind,
        errors=[{**v.as_error(), "type": kind} for v in violations],
    )


# -- param specs ------------------------------------------------------------------


def normalize_params_spec(raw: Any) -> dict[str, dict[str, Any] | None]:
    """Canonical ``allowed_params_json``; ``ValueError`` naming the param on any problem.

    Accepts ``{"name": null | "regex" | [enum...] | {"regex": ...} | {"enum": [...]}}``
    and returns ``{"name": None | {"regex": ...} | {"enum": [...]}}``.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError("allowed params must be an object mapping each param to null, a regex or an enum")
    if len(raw) > MAX_PARAMS:
        raise ValueError(f"at most {MAX_PARAMS} params may be allowed")
    out: dict[str, dict[str, Any] | None] = {}
    for name, spec in raw.items():
        if not isinstance(name, str) or not PARAM_KEY_RE.match(name):
            raise ValueError(f"param name {name!r} is invalid: a letter or '_', then letters, digits, '_', '.', '-'")
        try:
            out[name] = _normalize_one(spec)
        except ValueError as exc:
            raise ValueError(f"param {name!r}: {exc}") from None
    return out


def _normalize_one(spec: Any) -> dict[str, Any] | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = {"regex": spec}
    elif isinstance(spec, list):
        spec = {"enum": spec}
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in ("regex", "enum"):
        raise ValueError('expected null, a regex string, a list, {"regex": ...} or {"enum": [...]}')
    if "regex" in spec:
        pattern = spec["regex"]
        if not isinstance(pattern, str):
            raise ValueError("the regex must be a string")
        if text_problem(pattern):
            raise ValueError(f"the regex {text_problem(pattern)} (write it as an escape such as \\x00)")
        check_pattern(pattern)
        return {"regex": pattern}
    values = spec["enum"]
    if not isinstance(values, list) or not values:
        raise ValueError("the enum must be a non-empty list")
    if len(values) > MAX_ENUM:
        raise ValueError(f"the enum has more than {MAX_ENUM} values")
    for v in values:
        if not (v is None or isinstance(v, (str, int, float, bool))):
            raise ValueError("enum values must be strings, numbers, booleans or null")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("enum values must be finite numbers (not NaN or Infinity)")
        if isinstance(v, str) and len(v) > MAX_PARAM_VALUE:
            raise ValueError(f"enum values must be at most {MAX_PARAM_VALUE} characters")
        if isinstance(v, str) and text_problem(v):
            raise ValueError(f"an enum value {text_problem(v)}")
    return {"enum": values}


def check_pattern(pattern: str) -> Any:
    """Compile ``pattern`` with RE2 or raise ``ValueError`` saying why it is refused."""
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"the regex is longer than {MAX_PATTERN} characters")
    try:
        compiled = _compiled(pattern)
    except re2.error as exc:
        why = exc.args[0] if exc.args else exc
        if isinstance(why, bytes):
            why = why.decode("utf-8", "replace")
        raise ValueError(
            f"the regex does not compile with RE2: {why} (back-references, lookahead, lookbehind"
            " and conditionals are not supported)"
        ) from None
    if compiled.groups > MAX_GROUPS:
        raise ValueError(f"the regex has more than {MAX_GROUPS} groups")
    return compiled


@functools.lru_cache(maxsize=2048)
def _compiled(pattern: str) -> Any:
    """The RE2 program for ``pattern`` (linear-time matching; ``re2.error`` if RE2 cannot compile it)."""
    return re2.compile(pattern, options=_RE2_OPTIONS)


def normalize_origins(raw: Any, what: str) -> list[str] | None:
    """Canonical ``sources``/``calendars`` of an entry: None (any) or a list of distinct names."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ValueError(f"{what} must be a list of names or null (any)")
    if len(raw) > MAX_ORIGINS:
        raise ValueError(f"{what} may list at most {MAX_ORIGINS} names")
    out: list[str] = []
    for name in raw:
        if not isinstance(name, str) or not name or len(name) > 200 or text_problem(name):
            raise ValueError(f"{what} must hold names of 1 to 200 printable characters")
        if name not in out:
            out.append(name)
    return out


def scalar_text(value: Any) -> str:
    """The text a param's regex or enum is matched against (JSON for non-strings)."""
    return value if isinstance(value, str) else json.dumps(value)


def check_params(allowed: dict[str, Any], params: dict[str, Any], pointer: str = "/params") -> list[Violation]:
    """Every param must be allowed and match its regex or enum."""
    out: list[Violation] = []
    for name, value in params.items():
        where = f"{pointer}/{_escape(name)}"
        if name not in allowed:
            listed = ", ".join(sorted(allowed)) or "none"
            out.append(Violation(where, f"param {name!r} is not allowed for this command (allowed: {listed})"))
            continue
        spec = allowed[name]
        if spec is None:
            continue
        if isinstance(value, (dict, list)):
            out.append(Violation(where, f"param {name!r} must be a single value to be checked"))
            continue
        text = scalar_text(value)
        if "enum" in spec:
            if text not in {scalar_text(v) for v in spec["enum"]}:
                shown = ", ".join(scalar_text(v) for v in spec["enum"][:10])
                out.append(Violation(where, f"param {name!r} must be one of: {shown}"))
        elif len(text) > MAX_MATCH_INPUT:
            out.append(Violation(where, f"param {name!r} is longer than {MAX_MATCH_INPUT} characters"))
        elif _compiled(spec["regex"]).fullmatch(text) is None:
            out.append(Violation(where, f"param {name!r} does not match {spec['regex']!r}"))
    return out


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


# -- payload shape ------------------------------------------------------------------


#: What :func:`text_problem` accepts, as a JSON Schema ``pattern`` (for the document; the service checks).
#: Lone surrogates are refused too, but they are not Unicode text, so no schema string holds one.
STORABLE_PATTERN = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F]*$"


def text_problem(value: str) -> str | None:
    """Why a string cannot be stored (NUL, control characters, lone surrogates), or None."""
    for ch in value:
        o = ord(ch)
        if o < 32 and ch not in "\t\n\r":
            return f"contains the control character U+{o:04X}"
        if 0xD800 <= o <= 0xDFFF:
            return "contains a lone surrogate (not valid Unicode text)"
    return None


def check_json_value(value: Any, pointer: str, *, depth: int = 0) -> list[Violation]:
    """Strings anywhere in ``value`` must be storable text; nesting is bounded."""
    if depth > 20:
        return [Violation(pointer, "nested too deeply (more than 20 levels)")]
    if isinstance(value, str):
        why = text_problem(value)
        return [Violation(pointer, why)] if why else []
    if isinstance(value, dict):
        out: list[Violation] = []
        for k, v in value.items():
            where = f"{pointer}/{_escape(str(k))}"
            why = text_problem(str(k))
            if why:
                out.append(Violation(where, f"the key {why}"))
            out.extend(check_json_value(v, where, depth=depth + 1))
        return out
    if isinstance(value, list):
        out = []
        for i, v in enumerate(value):
            out.extend(check_json_value(v, f"{pointer}/{i}", depth=depth + 1))
        return out
    if isinstance(value, float) and not math.isfinite(value):
        # NaN and ±Infinity (``1e400`` parses to inf) are not JSON: PostgreSQL refuses them, SQLite stores null.
        return [Violation(pointer, "is not a finite number (NaN and Infinity cannot be stored)")]
    return []


def storable_text(value: str) -> str:
    """``value`` with the characters :func:`text_problem` refuses written as ``\\uXXXX`` escapes.

    For texts the service composes itself (audit reasons, error details) that may
    quote a refused value, so that recording why something was refused cannot fail.
    """
    if text_problem(value) is None:
        return value
    return "".join(
        f"\\u{ord(ch):04x}" if (ord(ch) < 32 and ch not in "\t\n\r") or 0xD800 <= ord(ch) <= 0xDFFF else ch
        for ch in value
    )


def storable_json(value: Any, pointer: str) -> tuple[bool, str]:
    """Whether ``value`` may go into a JSON column as it is, else (False, why) for a short description."""
    problems = check_json_value(value, pointer)
    if problems:
        return False, storable_text("; ".join(f"{v.pointer}: {v.detail}" for v in problems[:3]))[:500]
    if encoded_size(value) > MAX_PAYLOAD:
        return False, f"{pointer}: larger than {MAX_PAYLOAD} bytes"
    return True, ""


def encoded_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))


def check_payload(system: str, command: str, params: Any, args: Any) -> list[Violation]:
    """The shape every command must have, whatever path creates it."""
    out: list[Violation] = []
    if not isinstance(system, str) or not SYSTEM_RE.match(system):
        out.append(
            Violation("/target_system", "must be 1-64 letters, digits, '.', '_', '-', starting with a letter or digit")
        )
    if not isinstance(command, str) or not COMMAND_RE.match(command):
        out.append(Violation("/command", "must be a letter, then letters, digits, '_', '.', '-' (at most 64)"))
    if not isinstance(params, dict):
        out.append(Violation("/params", "must be an object"))
    else:
        if len(params) > MAX_PARAMS:
            out.append(Violation("/params", f"has more than {MAX_PARAMS} entries"))
        for key, value in params.items():
            where = f"/params/{_escape(str(key))}"
            if not PARAM_KEY_RE.match(str(key)):
                out.append(Violation(where, "param names are a letter or '_', then letters, digits, '_', '.', '-'"))
            if isinstance(value, str) and len(value) > MAX_PARAM_VALUE:
                out.append(Violation(where, f"is longer than {MAX_PARAM_VALUE} characters"))
            out.extend(check_json_value(value, where))
    if not isinstance(args, list):
        out.append(Violation("/args", "must be a list of strings"))
    else:
        if len(args) > MAX_ARGS:
            out.append(Violation("/args", f"has more than {MAX_ARGS} entries"))
        for i, arg in enumerate(args[: MAX_ARGS + 1]):
            if not isinstance(arg, str):
                out.append(Violation(f"/args/{i}", "must be a string"))
            elif len(arg) > MAX_ARG:
                out.append(Violation(f"/args/{i}", f"is longer than {MAX_ARG} characters"))
            else:
                why = text_problem(arg)
                if why:
                    out.append(Violation(f"/args/{i}", why))
    if not out and encoded_size({"p": params, "a": args}) > MAX_PAYLOAD:
        out.append(Violation("/params", f"params and args together exceed {MAX_PAYLOAD} bytes"))
    return out


def check_origin(entry: dict[str, Any], source: str | None, calendar_id: str | None) -> list[Violation]:
    """Whether a calendar entry of ``source``/``calendar_id`` may create the entry's commands."""
    out: list[Violation] = []
    name = f"{entry['system']}/{entry['action']}"
    sources, calendars = entry.get("sources"), entry.get("calendars")
    if sources is not None and source not in sources:
        listed = ", ".join(sources) or "none"
        out.append(Violation("/source", f"{name} may not be created from source {source!r} (allowed: {listed})"))
    if calendars is not None and calendar_id not in calendars:
        listed = ", ".join(calendars) or "none"
        out.append(
            Violation("/calendar_id", f"{name} may not be created from calendar {calendar_id!r} (allowed: {listed})")
        )
    return out


def check_against(
    entry: dict[str, Any] | None,
    system: str,
    command: str,
    params: dict[str, Any],
    *,
    calendar: tuple[str | None, str | None] | None = None,
) -> list[Violation]:
    """The whitelist decision for one command; ``entry`` is the matching row or None.

    ``calendar`` is the (source, calendar id) of a command created from a calendar entry,
    checked against the entry's ``sources`` and ``calendars``."""
    if entry is None:
        return [Violation("/command", f"{command!r} on system {system!r} is not whitelisted")]
    if not entry["enabled"]:
        return [Violation("/command", f"{command!r} on system {system!r} is whitelisted but disabled")]
    origin = check_origin(entry, *calendar) if calendar is not None else []
    return origin + check_params(entry["allowed_params_json"] or {}, params)
