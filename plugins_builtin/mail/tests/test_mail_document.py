"""The document states what the server accepts: every value drawn from a documented pattern is accepted.

The address, base64, file-name and content-type patterns in the OpenAPI document
are generated from (as a client or a fuzzer would) and fed to the request model;
none may be refused. Values just outside each pattern are refused with a message.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import ValidationError

from chronos.plugin import PluginContext  # noqa: F401 - the plugin's public surface is importable with the schemas

from chronos_mail.schemas import SendIn

SCHEMA = SendIn.model_json_schema(mode="validation")
DEFS = SCHEMA["$defs"]
ADDRESS = DEFS["DirectSendIn"]["properties"]["to"]["items"]["pattern"]
ATTACHMENT = DEFS["AttachmentIn"]["properties"]
BASE64, FILENAME, CONTENT_TYPE = (ATTACHMENT[k]["pattern"] for k in ("content", "filename", "content_type"))


def _within_documented_lengths(address: str) -> bool:
    spec = address.rsplit("<", 1)[-1].rstrip(">")
    local, _, domain = spec.rpartition("@")
    return len(address) <= 320 and len(local) <= 64 and len(domain) <= 253


def _message(**attachment: str) -> dict:
    return {"to": ["a@example.com"], "subject": "s", "text": "x", "attachments": [attachment] if attachment else []}


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
@given(st.from_regex(ADDRESS, fullmatch=True).filter(_within_documented_lengths))
def test_every_documented_address_is_accepted(address):
    SendIn.model_validate({**_message(), "to": [address], "cc": [address]})


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
@given(
    content=st.from_regex(BASE64, fullmatch=True),
    filename=st.from_regex(FILENAME, fullmatch=True).filter(lambda s: len(s) <= 255),
    content_type=st.from_regex(CONTENT_TYPE, fullmatch=True).filter(
        lambda s: s.lower().split("/")[0] not in ("multipart", "message")
    ),
)
def test_every_documented_attachment_is_accepted(content, filename, content_type):
    SendIn.model_validate(_message(filename=filename, content_type=content_type, content=content))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("to", "ädä@example.com"),
        ("to", "a@localhost"),
        ("to", "a@xn--bcher-kva.123"),
        ("to", '"=?utf-8?q?x?=" <a@example.com>'),
        ("to", "Ada, Bob <a@example.com>"),
        ("content", "YWJj="),
        ("content", "YW Jj"),
        ("filename", "   "),
        ("filename", "dir/a.txt"),
        ("content_type", "multipart/mixed"),
        ("content_type", "text"),
    ],
)
def test_values_outside_the_patterns_are_refused_with_a_reason(field, value):
    if field == "to":
        body, pattern = {**_message(), "to": [value]}, ADDRESS
    else:
        attachment = {"filename": "a.txt", "content_type": "text/plain", "content": "YWJj", field: value}
        body, pattern = (
            _message(**attachment),
            {"content": BASE64, "filename": FILENAME, "content_type": CONTENT_TYPE}[field],
        )
    assert not re.fullmatch(pattern, value), "the document must not promise what the server refuses"
    with pytest.raises(ValidationError) as exc:
        SendIn.model_validate(body)
    assert exc.value.errors()[0]["msg"].startswith("Value error, "), exc.value.errors()
