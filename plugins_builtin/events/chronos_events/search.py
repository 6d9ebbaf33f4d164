"""Full-text search over title, description and location, on both backends.

* SQLite: an FTS5 external-content table ``events_fts`` (``content='events'``)
  kept in sync by three triggers. SQLite batch migrations rebuild tables and
  drop their triggers, so :func:`ensure_sqlite_fts` re-creates them
  idempotently after every migration run (``Migrations.after_migrate``).
* PostgreSQL: a GIN expression index over the three fields' ``simple``
  tsvectors, weighted A/B/C so phrases never run across two fields.
  ``simple`` (no stemming, no stop words) because events mix languages and so
  that a search finds the same events on both backends: FTS5's ``unicode61``
  tokenizer does not stem either. Prefix search covers most of what stemming
  would add ("meet*" finds "meeting").

Both backends split words at punctuation. FTS5's ``unicode61`` does so by
itself. PostgreSQL's default parser does not: it keeps ``example.com``
(host), ``jane@example.org`` (email), ``1.2`` (version), ``/a/b`` (file) and
``web-1`` (hyphenated word) as tokens of their own, which a search for
``example`` or ``web-1`` would not find. The indexed expression first turns
every ASCII character other than a letter or digit into a space
(:data:`PG_SEPARATORS`); all of those special tokens are built from ASCII
punctuation, so the parser is left with plain words. Non-ASCII text goes to
the parser as it is, on the index side as on the query side (see
:func:`parse_query`), so both cut it alike whatever the database's locale.
The class is spelled out in code points rather than as ``[^[:alnum:]]``
because PostgreSQL's ``[:alnum:]`` follows ``LC_CTYPE``: with ``C`` it is
ASCII-only and would wipe out every non-ASCII letter (``Größe`` -> ``gr e``).
PostgreSQL folds the case of non-ASCII letters only with a UTF-8
``LC_CTYPE`` (the norm; ``C`` leaves ``Ü`` and ``ü`` distinct), and never
drops accents, while ``unicode61`` does: on SQLite ``cafe`` also finds
``café``; a search for ``café`` finds it on both.

User text is parsed here, never passed through: ``"two words"`` is a phrase,
``word*`` a prefix, everything else is a plain word; all terms must match.
Operators, quotes and ASCII punctuation are dropped, so any input yields a
valid query (or none at all when no word is left). What is left of a term is
handed to the backend's own tokenizer (FTS5 re-tokenizes a quoted string,
``to_tsquery`` a quoted lexeme, and both fold case), so the query's words are
cut and folded exactly like the indexed text's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SQLITE_FTS_TABLE = "events_fts"

# ASCII punctuation, spaces and control characters: what PostgreSQL's parser
# must not see (see the module docstring). Each run becomes one space before
# to_tsvector, so "example.com" indexes as "example" "com", adjacent.
PG_SEPARATORS = r"[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+"


def _pg_field(column: str, weight: str) -> str:
    return f"setweight(to_tsvector('simple', regexp_replace({column}, '{PG_SEPARATORS}', ' ', 'g')), '{weight}')"


# One weight per field: a phrase must stay inside one field (as in FTS5, whose
# columns are separate), which weighted lexemes in the query express. Queries
# must spell this expression exactly as the index does (revision events0002),
# or the planner cannot use the index.
PG_TSVECTOR = (
    "(" + " || ".join(_pg_field(c, w) for c, w in (("title", "A"), ("description", "B"), ("location", "C"))) + ")"
)
PG_INDEX = "ix_events_search"

SQLITE_CREATE_FTS = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {SQLITE_FTS_TABLE} USING fts5("
    "title, description, location, content='events', content_rowid='id')"
)

SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER IF NOT EXISTS events_fts_ai AFTER INSERT ON events BEGIN
  INSERT INTO {SQLITE_FTS_TABLE}(rowid, title, description, location)
  VALUES (new.id, new.title, new.description, new.location);
END""",
    f"""CREATE TRIGGER IF NOT EXISTS events_fts_ad AFTER DELETE ON events BEGIN
  INSERT INTO {SQLITE_FTS_TABLE}({SQLITE_FTS_TABLE}, rowid, title, description, location)
  VALUES ('delete', old.id, old.title, old.description, old.location);
END""",
    # Only text changes touch the index: metadata, flags and times do not.
    f"""CREATE TRIGGER IF NOT EXISTS events_fts_au AFTER UPDATE OF title, description, location ON events BEGIN
  INSERT INTO {SQLITE_FTS_TABLE}({SQLITE_FTS_TABLE}, rowid, title, description, location)
  VALUES ('delete', old.id, old.title, old.description, old.location);
  INSERT INTO {SQLITE_FTS_TABLE}(rowid, title, description, location)
  VALUES (new.id, new.title, new.description, new.location);
END""",
)

SQLITE_TRIGGER_NAMES = ("events_fts_ai", "events_fts_ad", "events_fts_au")


def ensure_sqlite_fts(conn) -> None:  # noqa: ANN001 - a synchronous SQLAlchemy Connection
    """Create the FTS table and its triggers if missing (idempotent).

    Called after every migration run: a batch rebuild of ``events`` drops the
    triggers. When the FTS table itself had to be created, it is filled from
    the existing rows.
    """
    if conn.dialect.name != "sqlite":
        return
    if conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type='table' AND name='events'").first() is None:
        return  # not migrated yet (e.g. while a first revision is being generated)
    existed = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (SQLITE_FTS_TABLE,)
    ).first()
    conn.exec_driver_sql(SQLITE_CREATE_FTS)
    missing = [
        name
        for name in SQLITE_TRIGGER_NAMES
        if conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type='trigger' AND name=?", (name,)).first() is None
    ]
    for ddl in SQLITE_TRIGGERS:
        conn.exec_driver_sql(ddl)
    if not existed or missing:
        # Rows written while the triggers were gone are not indexed: rebuild.
        conn.exec_driver_sql(f"INSERT INTO {SQLITE_FTS_TABLE}({SQLITE_FTS_TABLE}) VALUES ('rebuild')")


# -- user text -> query -------------------------------------------------------------

# A word: a run of anything but white space and the ASCII characters that
# PG_SEPARATORS removes from indexed text (these include every character the
# FTS5 and tsquery syntaxes give a meaning to). Non-ASCII separators inside a
# run ("a—b") and combining marks are left to the backend's tokenizer, which
# treats them exactly as it treated the indexed text.
_WORD = re.compile(r"[^\s\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+")
_LETTER = re.compile(r"[^\W_]")  # a word without any letter or digit ("—", "€") is dropped
_TERM = re.compile(r'"([^"]*)"?|(\S+)')
MAX_TERMS = 16


@dataclass(frozen=True)
class Term:
    """A phrase of one or more words; ``prefix`` applies to the last word."""

    words: tuple[str, ...]
    prefix: bool = False


def parse_query(text: str) -> list[Term]:
    """Split user text into terms; quotes make phrases, a trailing ``*`` a prefix.

    White space and ASCII punctuation separate words, so no input can produce a
    syntax error downstream. Words keep their case: the backends fold it the
    way they folded the indexed text (Python's ``lower()`` differs, e.g. for a
    final sigma). Returns ``[]`` when no word is left.
    """
    terms: list[Term] = []
    for match in _TERM.finditer(text):
        phrase, bare = match.group(1), match.group(2)
        chunk = phrase if phrase is not None else bare
        words = tuple(w for w in _WORD.findall(chunk) if _LETTER.search(w))
        if not words:
            continue
        prefix = phrase is None and chunk.rstrip().endswith("*")
        # "e-mail" typed bare becomes the phrase "e mail": the words must follow each other.
        terms.append(Term(words, prefix))
        if len(terms) >= MAX_TERMS:
            break
    return terms


def fts5_match(terms: list[Term]) -> str:
    """An FTS5 MATCH expression: every word double-quoted, phrases as one string."""
    parts = []
    for term in terms:
        quoted = '"' + " ".join(term.words).replace('"', '""') + '"'
        parts.append(quoted + ("*" if term.prefix else ""))
    return " AND ".join(parts)


def pg_tsquery(terms: list[Term]) -> str:
    """A ``to_tsquery('simple', ...)`` string: quoted lexemes, ``<->`` for phrases, ``:*`` for prefixes.

    ``to_tsquery`` runs every quoted lexeme through the parser and the
    ``simple`` dictionary, as ``to_tsvector`` did the indexed text: case is
    folded there, and a word the parser cuts in two (at a non-ASCII
    separator) becomes a phrase with the same weight and prefix flag.
    """
    parts = []
    for term in terms:
        lexemes = ["'" + w.replace("'", "''").replace("\\", "\\\\") + "'" for w in term.words]
        if len(lexemes) == 1:
            parts.append(lexemes[0] + (":*" if term.prefix else ""))
            continue
        # A phrase matches inside one field: the same weight on every word.
        per_field = []
        for weight in "ABC":
            words = [f"{lx}:{weight}" for lx in lexemes]
            if term.prefix:
                words[-1] = f"{lexemes[-1]}:*{weight}"
            per_field.append(" <-> ".join(words))
        parts.append("(" + " | ".join(f"({p})" for p in per_field) + ")")
    return " & ".join(parts)
