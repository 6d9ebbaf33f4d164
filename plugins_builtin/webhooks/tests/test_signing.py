"""Standard Webhooks v1 and X-Signature: the specification's published vector, rotation, refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from chronos.plugin import webhook_signing

# The test vector published with the Standard Webhooks reference libraries.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_published_vector():
    assert (
        webhook_signing.sign_v1(webhook_signing.secret_key(VECTOR_SECRET), VECTOR_ID, VECTOR_TS, VECTOR_BODY)
        == VECTOR_SIGNATURE
    )
    headers = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS), "webhook-signature": VECTOR_SIGNATURE}
    assert webhook_signing.verify(
        [webhook_signing.secret_key(VECTOR_SECRET)], headers, VECTOR_BODY, now=VECTOR_TS + 10, tolerance=300
    ) == (
        VECTOR_ID,
        VECTOR_TS,
    )


def test_rotation_signs_with_every_key_and_each_verifies():
    old, new = (
        webhook_signing.secret_key(webhook_signing.new_secret()),
        webhook_signing.secret_key(webhook_signing.new_secret()),
    )
    headers = webhook_signing.signature_headers([new, old], "msg_x", 1700000000, b"{}")
    assert len(headers["webhook-signature"].split()) == 2 and len(headers["X-Signature"].split()) == 2
    for key in (old, new):
        assert webhook_signing.verify([key], headers, b"{}", now=1700000000, tolerance=300)[1] == 1700000000
    x_only = {"X-Signature": headers["X-Signature"], "X-Timestamp": headers["X-Timestamp"]}
    assert webhook_signing.verify([old], x_only, b"{}", now=1700000000, tolerance=300) == ("", 1700000000)
    expected = hmac.new(old, b"1700000000.{}", hashlib.sha256).hexdigest()
    assert expected in headers["X-Signature"].split()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"body": b'{"test": 1}'}, "does not match"),
        ({"now": VECTOR_TS + 301}, "away from now"),
        ({"now": VECTOR_TS - 301}, "away from now"),
        ({"key": b"k" * 32}, "does not match"),
    ],
)
def test_forged_or_stale_signatures_are_refused(change, reason):
    headers = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS), "webhook-signature": VECTOR_SIGNATURE}
    key = change.get("key", webhook_signing.secret_key(VECTOR_SECRET))
    with pytest.raises(ValueError, match=reason):
        webhook_signing.verify(
            [key], headers, change.get("body", VECTOR_BODY), now=change.get("now", VECTOR_TS), tolerance=300
        )


def test_malformed_secrets_and_headers():
    for bad in ("secret", "whsec_!!!", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(ValueError):
            webhook_signing.secret_key(bad)
    with pytest.raises(ValueError, match="no signature"):
        webhook_signing.verify([b"k" * 32], {}, b"", now=0, tolerance=300)
    with pytest.raises(ValueError, match="whole seconds"):
        webhook_signing.verify([b"k" * 32], {"X-Signature": "ab", "X-Timestamp": "1e9"}, b"", now=0, tolerance=300)
