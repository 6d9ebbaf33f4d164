"""Reading multistatus answers: hrefs in every form servers send, the first 200 propstat, objects without data."""

from __future__ import annotations

import pytest
from lxml import etree

from chronos_caldav.dav import _href, _resource

BASE = "https://dav.example.org/ann/work/"


def response(href: str, *propstats: str) -> etree._Element:
    body = "".join(propstats)
    return etree.fromstring(
        f'<d:response xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:href>{href}</d:href>{body}</d:response>'
    )


def propstat(status: str, prop: str) -> str:
    return f"<d:propstat><d:prop>{prop}</d:prop><d:status>HTTP/1.1 {status}</d:status></d:propstat>"


@pytest.mark.parametrize(
    ("href", "path"),
    [
        ("/ann/work/a%20b.ics", "/ann/work/a b.ics"),  # absolute path, percent-decoded
        ("  /ann/work/x.ics\n", "/ann/work/x.ics"),
        ("a.ics", "/ann/work/a.ics"),  # relative to the calendar
        ("https://dav.example.org/ann/work/c.ics", "/ann/work/c.ics"),  # a full URL
        ("/ann/./work/../work/d.ics", "/ann/work/d.ics"),  # dot segments resolved
        ("/ann/work/e.ics?x=1", "/ann/work/e.ics"),  # no query
        ("/ann/work/f.ics#top", "/ann/work/f.ics"),  # no fragment
        ("//other.example.org/g.ics", "/g.ics"),  # network-path reference: only its path
    ],
)
def test_hrefs_become_decoded_absolute_paths(href, path):
    assert _href(BASE, response(href)) == path


def test_the_first_ok_propstat_gives_the_data_and_etag():
    r = response(
        "/ann/work/a.ics",
        propstat("404 Not Found", "<d:getcontentlength/>"),
        propstat("200 OK", '<d:getetag> "e1" </d:getetag><c:calendar-data>BEGIN:VCALENDAR</c:calendar-data>'),
    )
    res = _resource(_href(BASE, r), r)
    assert res is not None
    assert (res.href, res.etag, res.data) == ("/ann/work/a.ics", '"e1"', "BEGIN:VCALENDAR")


@pytest.mark.parametrize(
    "props",
    [
        (propstat("404 Not Found", "<c:calendar-data>BEGIN:VCALENDAR</c:calendar-data>"),),
        (propstat("200 OK", '<d:getetag>"e1"</d:getetag><c:calendar-data/>'),),
        (propstat("200 OK", '<d:getetag>"e1"</d:getetag>'),),
        (),
    ],
)
def test_objects_without_readable_data_are_left_out(props):
    r = response("/ann/work/a.ics", *props)
    assert _resource(_href(BASE, r), r) is None
