"""Opaque keyset cursors shared by every list endpoint.

A cursor is base64url JSON of the last item's sort key plus a ``k`` naming the
list it belongs to; decoding checks both, so a cursor from another list, a
truncated one or a forged one is a 400, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from chronos.exceptions import MalformedInput

# Keys are BIGINT columns: a larger number in a forged cursor would fail in the driver.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def encode_cursor(kind: str, values: list[Any]) -> str:
    raw = json.dumps({"k": kind, "v": values}, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str, types: list[type]) -> list[Any]:
    """Decode ``cursor`` for list ``kind``; each value must match ``types`` in order."""
    bad = MalformedInput(
        "The cursor is invalid or belongs to another query; start again without it", type="invalid-cursor"
    )
    if len(cursor) > 2048:
        raise bad
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(data, dict) or data.get("k") != kind or not isinstance(data.get("v"), list):
        raise bad
    values: list[Any] = data["v"]
    if len(values) != len(types):
        raise bad
    for value, typ in zip(values, types, strict=True):
        if typ is int and (
            isinstance(value, bool) or not isinstance(value, int) or not INT64_MIN <= value <= INT64_MAX
        ):
            raise bad
        if typ is not int and not isinstance(value, typ):
            raise bad
    return values
