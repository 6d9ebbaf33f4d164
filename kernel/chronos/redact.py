"""Keeping secrets out of messages: URLs reduced to what is safe to show.

Private calendar feeds carry their secret in the URL's path or query string
and database URLs carry a password, so anything that reports a URL (a sync
run's error, a log line, an API answer, a configuration error) shows only its
scheme and host.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

#: A URL inside free text: a scheme, ``://`` and everything up to whitespace or a quote.
URL_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")

#: Key names whose values are secrets (settings, log fields).
SECRET_NAME_RE = re.compile(r"(password|passwd|secret|token|authorization|api[_-]?key|credential)", re.I)


def redact_url(url: str) -> str:
    """``scheme://host[:port]``: no user info, path, query string or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    if not parts.scheme:
        return "<URL>"
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}"


def redact_urls(text: str) -> str:
    """``text`` with every URL in it reduced to its scheme and host."""
    if "://" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        url = match.group(0)
        trail = len(url) - len(url.rstrip(".,;:!?)]}"))  # punctuation after the URL stays
        return redact_url(url[: len(url) - trail]) + url[len(url) - trail :]

    return URL_RE.sub(one, text)


def hide_password(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***`` (the rest kept: a config error
    must stay actionable)."""
    return re.sub(r"\b([A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*):[^/@\s]*@", r"\1:***@", url)
