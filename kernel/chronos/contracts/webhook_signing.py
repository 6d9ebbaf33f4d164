"""Webhook signatures: Standard Webhooks v1 and the original X-Signature / X-Timestamp pair.

One implementation for everything the outbox signs or checks: webhook
endpoints, channels that post signed requests (n8n) and signed inbound
requests. Plugins use it as ``chronos.plugin.webhook_signing``.

Standard Webhooks (https://www.standardwebhooks.com): secrets are
``whsec_<base64 of 24-64 random bytes>``; ``webhook-signature`` is a
space-separated list of ``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>``,
one per active secret (rotation). ``X-Signature`` is the hex HMAC-SHA256 of
``"{timestamp}.{body}"`` with the same key bytes, one per active secret,
space-separated too; ``X-Timestamp`` equals ``webhook-timestamp``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _random
from collections.abc import Iterable, Mapping

PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret: 32 random bytes, Standard Webhooks' serialisation."""
    return PREFIX + base64.b64encode(_random.token_bytes(32)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; ``ValueError`` when it is not one."""
    if not secret.startswith(PREFIX):
        raise ValueError("a signing secret starts with whsec_")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a signing secret is whsec_ followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("a signing secret holds 24 to 64 bytes")
    return key


def sign_v1(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def sign_hex(key: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_headers(keys: Iterable[bytes], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The signing headers of one request, signed with every key (newest first)."""
    keys = list(keys)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign_v1(k, webhook_id, timestamp, body) for k in keys),
        "X-Timestamp": str(timestamp),
        "X-Signature": " ".join(sign_hex(k, timestamp, body) for k in keys),
    }


def verify(
    keys: Iterable[bytes], headers: Mapping[str, str], body: bytes, *, now: float, tolerance: float
) -> tuple[str, int]:
    """Check a signed request; returns ``(webhook id or "", timestamp)``.

    Accepts Standard Webhooks headers, else ``X-Signature``/``X-Timestamp``.
    Raises ``ValueError`` with a one-line reason: missing headers, a timestamp
    outside ``now ± tolerance`` or no signature that matches (compared in
    constant time against every key).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    keys = list(keys)
    if "webhook-signature" in lower:
        webhook_id = lower.get("webhook-id", "")
        raw_ts = lower.get("webhook-timestamp", "")
        if not webhook_id or not raw_ts:
            raise ValueError("webhook-id and webhook-timestamp are required with webhook-signature")
        timestamp = _timestamp(raw_ts, now, tolerance)
        given = [s.partition(",")[2] for s in lower["webhook-signature"].split() if s.startswith("v1,")]
        expected = [sign_v1(k, webhook_id, timestamp, body).partition(",")[2] for k in keys]
    elif "x-signature" in lower:
        webhook_id = lower.get("webhook-id", "")
        timestamp = _timestamp(lower.get("x-timestamp", ""), now, tolerance)
        given = lower["x-signature"].split()
        expected = [sign_hex(k, timestamp, body) for k in keys]
    else:
        raise ValueError("no signature: send webhook-signature (Standard Webhooks) or X-Signature")
    for g in given:
        for e in expected:
            if hmac.compare_digest(g.encode(), e.encode()):
                return webhook_id, timestamp
    raise ValueError("the signature does not match")


def _timestamp(raw: str, now: float, tolerance: float) -> int:
    if not raw or not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise ValueError("the timestamp must be whole seconds since 1970")
    timestamp = int(raw)
    if abs(now - timestamp) > tolerance:
        raise ValueError(f"the timestamp is more than {int(tolerance)} seconds away from now")
    return timestamp
