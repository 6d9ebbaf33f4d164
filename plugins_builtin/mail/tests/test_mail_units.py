"""Pure functions: address parsing, HTML to text, failure classification, back-off."""

from __future__ import annotations

import aiosmtplib
import pytest

from chronos_mail.addresses import parse_address
from chronos_mail.mime import html_to_text
from chronos_mail.sender import backoff_seconds, classify
from chronos_mail.settings import MailSettings


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("ada@example.com", "ada@example.com"),
        ("Ada Lovelace <ada@example.com>", "Ada Lovelace <ada@example.com>"),
        ('"Lovelace, Ada" <ada@EXAMPLE.com>', '"Lovelace, Ada" <ada@example.com>'),
        ("Jürgen <j@bücher.example>", "Jürgen <j@xn--bcher-kva.example>"),
        ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
    ],
)
def test_valid_addresses(raw, expected):
    assert str(parse_address(raw)) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "plain",
        "a@b",
        "@example.com",
        "a@",
        "a@@example.com",
        "a@example..com",
        "a@-x.com",
        "a@x-.com",
        "a@[127.0.0.1]",
        "a@example.123",
        "ä@example.com",
        ".a@example.com",
        "a.@example.com",
        "a b@example.com",
        "a@example.com\r\nBcc: b@example.com",
        "a@example.com\n",
        "A\x00 <a@example.com>",
        "a@example.com, b@example.com",
        "x" * 65 + "@example.com",
        "a@" + "x" * 64 + ".com",
    ],
)
def test_invalid_addresses(raw):
    with pytest.raises(ValueError):
        parse_address(raw)


def test_single_label_only_where_allowed():
    assert parse_address("chronos@localhost", allow_single_label=True).domain == "localhost"
    with pytest.raises(ValueError):
        parse_address("chronos@localhost")


def test_html_to_text():
    html = """<html><head><title>T</title><style>p{color:red}</style></head><body>
      <h1>Hello&nbsp;Ada</h1><p>Your   <b>order</b> &amp; invoice:<br>line two</p>
      <ul><li>one</li><li>two</li></ul>
      <p><a href="https://example.com/x">the link</a> and <a href="https://example.com/y">https://example.com/y</a></p>
      <script>alert(1)</script><pre>  keep
   this</pre></body></html>"""
    text = html_to_text(html)
    assert text == (
        "Hello Ada\n\nYour order & invoice:\nline two\n\n- one\n- two\n\n"
        "the link (https://example.com/x) and https://example.com/y\n\n  keep\n   this\n"
    )
    assert html_to_text("") == "\n"
    assert html_to_text("<p>unclosed <a href='u'>x") == "unclosed x (u)\n"


def test_classification():
    assert classify(aiosmtplib.SMTPDataError(451, "later")).status == "retry"
    out = classify(aiosmtplib.SMTPDataError(550, "no such user"))
    assert (out.status, out.code, out.text) == ("failed", 550, "no such user")
    assert classify(aiosmtplib.SMTPSenderRefused(421, "busy", "a@example.com")).status == "retry"
    assert classify(aiosmtplib.SMTPAuthenticationError(535, "bad credentials")).status == "failed"
    assert classify(aiosmtplib.SMTPAuthenticationError(454, "temporary")).status == "retry"
    assert classify(ConnectionRefusedError(111, "Connection refused")).status == "retry"
    assert classify(aiosmtplib.SMTPReadTimeoutError("timed out")).status == "retry"
    assert classify(aiosmtplib.SMTPServerDisconnected("gone")).status == "retry"
    both = aiosmtplib.SMTPRecipientsRefused(
        [
            aiosmtplib.SMTPRecipientRefused(550, "no", "a@example.com"),
            aiosmtplib.SMTPRecipientRefused(450, "later", "b@example.com"),
        ]
    )
    assert classify(both).status == "retry"  # one recipient may still work later
    perm = aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no", "a@example.com")])
    out = classify(perm)
    assert (out.status, out.code, out.refused) == ("failed", 550, {"a@example.com": "550 no"})


def test_backoff_grows_with_jitter_and_cap():
    s = MailSettings.model_validate({"retry": {"base_seconds": 10, "max_seconds": 100}})
    for attempt, full in ((1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (12, 100)):
        values = {backoff_seconds(attempt, s) for _ in range(50)}
        assert all(full / 2 <= v <= full for v in values), (attempt, values)
        assert len(values) > 1  # jittered


def test_sender_setting_is_validated():
    assert MailSettings.model_validate({"from": "Chronos <c@localhost>"}).from_ == "Chronos <c@localhost>"
    with pytest.raises(ValueError):
        MailSettings.model_validate({"from": "not an address"})
    assert "secret" not in repr(MailSettings.model_validate({"smtp": {"password": "secret"}}))
