"""The settings refuse what would leak or cannot work: credentials in URLs, two password sources."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chronos_caldav.settings import CaldavCalendar, CaldavSettings


def calendar(**extra):
    return {"id": "work", "url": "https://dav.example.org/ann/work/", "username": "ann", **extra}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (calendar(url="https://ann:pw@dav.example.org/ann/work/"), "carries a user name or password"),
        (calendar(url="webcal://dav.example.org/ann/work/"), "http:// or https://"),
        (calendar(password_env="PW", password_file="/run/pw"), "at most one of password_env and password_file"),
        ({"id": "work", "url": "https://dav.example.org/x/", "password_env": "PW"}, "a password needs a username"),
        (calendar(password_env="not a name"), "password_env"),
        (calendar(default_timezone="Mars/Olympus"), "unknown IANA time zone"),
        (calendar(auth="ntlm"), "auth"),
    ],
)
def test_invalid_calendars_are_refused(entry, message):
    with pytest.raises(ValidationError, match=message):
        CaldavSettings(calendars=[entry])


def test_duplicate_ids_are_refused():
    with pytest.raises(ValidationError, match="appears twice"):
        CaldavSettings(calendars=[calendar(), calendar()])


def test_the_password_is_read_when_needed(monkeypatch, tmp_path):
    monkeypatch.setenv("CALDAV_SETTINGS_TEST_PW", "first")
    cal = CaldavCalendar(**calendar(password_env="CALDAV_SETTINGS_TEST_PW"))
    assert cal.password() == "first"
    monkeypatch.setenv("CALDAV_SETTINGS_TEST_PW", "rotated")
    assert cal.password() == "rotated"
    secret = tmp_path / "pw"
    secret.write_text("from-a-file\n")
    assert CaldavCalendar(**calendar(password_file=str(secret))).password() == "from-a-file"
    assert CaldavCalendar(**{"id": "open", "url": "https://dav.example.org/public/"}).password() is None
