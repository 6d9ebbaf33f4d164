"""The calendar command syntax (pure functions, no database)."""

from __future__ import annotations

import pytest

from chronos_commands.syntax import ActionEntry, LinkEntry, NoteEntry, NotTaken, parse_entry, tokenize


@pytest.mark.parametrize(
    "title",
    [
        "NOTIZ: Milch kaufen",
        "notiz: Milch kaufen",
        "Notiz:\tMilch kaufen",
        "  NOTE: Milch kaufen",
        "note:   Milch kaufen  ",
        "NoTe:\u00a0Milch kaufen",
    ],
)
def test_notes(title):
    assert parse_entry(title) == NoteEntry("Milch kaufen")


def test_a_note_keeps_the_description_and_unicode():
    entry = parse_entry("NOTIZ: Grüße an 👩‍🔬 <b>Ada</b>; DROP TABLE x", "Details\nzweite Zeile")
    assert entry == NoteEntry("Grüße an 👩‍🔬 <b>Ada</b>; DROP TABLE x", "Details\nzweite Zeile")
    assert parse_entry("NOTE: x", "   ") == NoteEntry("x")


@pytest.mark.parametrize(
    ("title", "reason"),
    [
        ("Notiz:x", "needs a space after the colon"),
        ("URL:https://example.org", "needs a space after the colon"),
        ("notiz : x", "space before the colon"),
        ("ACTION  : LIGHT homeserver", "space before the colon"),
        ("NOTIZ\uff1a fullwidth", "instead of ':'"),
        ("NOTIZ:", "nothing follows 'NOTIZ:'"),
        ("NOTE:   ", "nothing follows 'NOTE:'"),
    ],
)
def test_near_misses_carry_a_hint(title, reason):
    entry = parse_entry(title)
    assert isinstance(entry, NotTaken) and entry.status == "ignored", entry
    assert reason in entry.reason
    assert entry.hint() == {"status": "ignored", "kind": entry.kind, "reason": entry.reason}


@pytest.mark.parametrize(
    "title",
    [
        "Team meeting",
        "Notizen: sortieren",
        "Note to self: buy milk",
        "URLaub planen",
        "Actionplan: review",
        "",
        "   ",
        "NOTIZ",
        "x NOTIZ: y",
    ],
)
def test_ordinary_events(title):
    assert parse_entry(title) is None


def test_links():
    assert parse_entry("URL: https://example.org/a?b=c#d Read later") == LinkEntry(
        "https://example.org/a?b=c#d", "Read later"
    )
    # Without a title the event's title is the link's title.
    assert parse_entry("url: http://example.org") == LinkEntry("http://example.org", "url: http://example.org")
    assert parse_entry("URL:  HTTPS://Example.org:8443/x\tTab title") == LinkEntry(
        "HTTPS://Example.org:8443/x", "Tab title"
    )
    assert parse_entry("URL: https://example.org", "notes").description == "notes"


@pytest.mark.parametrize(
    ("title", "reason"),
    [
        ("URL: ftp://example.org/file", "only http and https"),
        ("URL: javascript:alert(1)", "only http and https"),
        ("URL: example.org", "only http and https"),
        ("URL: https:///nohost", "no host"),
        ("URL: https://example.org:99999/", "malformed"),
        ("URL: https://" + "a" * 2100 + ".org", "longer than 2048"),
    ],
)
def test_invalid_links_are_rejected_with_a_reason(title, reason):
    entry = parse_entry(title)
    assert isinstance(entry, NotTaken) and entry.status == "rejected" and entry.kind == "link"
    assert reason in entry.reason


def test_actions():
    entry = parse_entry("ACTION: light homeserver room=kitchen level=50 now please")
    assert entry == ActionEntry(
        "LIGHT",
        "homeserver",
        {"room": "kitchen", "level": "50"},
        ("now", "please"),
        "ACTION: LIGHT homeserver room=kitchen level=50 now please",
    )
    # The target is kept as written; the command is upper-cased.
    assert parse_entry("action: reboot HomeServer-2").target == "HomeServer-2"
    assert parse_entry("action: reboot HomeServer-2").command == "REBOOT"


def test_action_quoting_and_odd_tokens():
    entry = parse_entry('ACTION: SAY speaker msg="hello world" "two words" empty= =x url=https://x.org/?a=b')
    assert entry.params == {"msg": "hello world", "empty": "", "url": "https://x.org/?a=b"}
    assert entry.args == ("two words", "=x")
    typographic = parse_entry("ACTION: SAY speaker msg=\u201chello there\u201d")
    assert typographic.params == {"msg": "hello there"}
    assert tokenize(r'a "b \" c" d') == ["a", 'b " c', "d"]
    with pytest.raises(ValueError):
        tokenize('a "unclosed')


def test_normalised_text_ignores_spacing_and_case_but_not_meaning():
    a = parse_entry("ACTION: light   homeserver  room=kitchen")
    b = parse_entry("action:\tLight homeserver room=kitchen ")
    c = parse_entry('ACTION: LIGHT homeserver "room=kitchen"')
    d = parse_entry('ACTION: SAY speaker msg="a b"')
    e = parse_entry("ACTION: SAY speaker msg=a b")
    assert a.normalized == b.normalized == "ACTION: LIGHT homeserver room=kitchen"
    assert c.normalized == a.normalized  # quotes around a bare token change nothing
    assert d.normalized != e.normalized


def test_description_json_adds_params():
    desc = 'Switch it on.\n\n```json\n{"level": 80, "colour": {"r": 1}}\n```\n'
    entry = parse_entry("ACTION: LIGHT homeserver room=hall", desc)
    assert entry.params == {"room": "hall", "level": 80, "colour": {"r": 1}}
    assert entry.normalized.endswith('{"colour":{"r":1},"level":80}')
    plain = parse_entry("ACTION: LIGHT homeserver", '```\n{"level": 1}\n```')
    assert plain.params == {"level": 1}
    other_lang = parse_entry("ACTION: LIGHT homeserver", '```python\n{"level": 1}\n```')
    assert other_lang.params == {}


@pytest.mark.parametrize(
    ("title", "description", "reason"),
    [
        ("ACTION: LIGHT", None, "needs a command and a target"),
        ("ACTION: ", None, "nothing follows"),
        ("ACTION: 9LIVES homeserver", None, "command '9LIVES' is invalid"),
        ("ACTION: LIGHT home/server", None, "target 'home/server' is invalid"),
        ("ACTION: LIGHT homeserver a=1 a=2", None, "given twice"),
        ('ACTION: SAY speaker msg="unclosed', None, "quote is not closed"),
        ("ACTION: LIGHT homeserver room=a", '```json\n{"room": "b"}\n```', "both the title and the description"),
        ("ACTION: LIGHT homeserver", "```json\n{not json}\n```", "not valid JSON"),
        ("ACTION: LIGHT homeserver", "```json\n[1, 2]\n```", "must be a JSON object"),
        ("ACTION: LIGHT homeserver " + "x" * 4001, None, "longer than 4000"),
    ],
)
def test_invalid_actions_are_rejected_with_a_reason(title, description, reason):
    entry = parse_entry(title, description)
    assert isinstance(entry, NotTaken), entry
    assert reason in entry.reason
    assert entry.kind == "action"


def test_binary_and_control_characters_do_not_crash_the_parser():
    for title in ("ACTION: LIGHT homeserver \x00\x01\x02", "NOTIZ: \udcff", "URL: https://x.org/\x00", "\x00NOTIZ: x"):
        parse_entry(title, '\x00```json\n{"a": "\\u0000"}\n```')
