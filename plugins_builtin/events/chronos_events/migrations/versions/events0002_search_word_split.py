"""split words at punctuation in the PostgreSQL full-text index

PostgreSQL's default parser keeps "example.com", "jane@example.org", "1.2" and
"web-1" as host, email, version and hyphenated tokens, so a search for
"example" missed them while SQLite's FTS5 finds them. The index now covers the
text with ASCII punctuation, spaces and control characters turned into spaces
(see chronos_events.search). SQLite: nothing to do.

Revision ID: events0002
Revises: events0001
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

from alembic import op

# Literal copies (a revision must not change when the package does); the
# current expression is chronos_events.search.PG_TSVECTOR.
NEW_TSVECTOR = (
    r"(setweight(to_tsvector('simple', regexp_replace(title, '[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+', ' ', 'g')), 'A')"
    r" || setweight(to_tsvector('simple', regexp_replace(description, '[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+', ' ', 'g')), 'B')"
    r" || setweight(to_tsvector('simple', regexp_replace(location, '[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+', ' ', 'g')), 'C'))"
)
OLD_TSVECTOR = (
    "(setweight(to_tsvector('simple', title), 'A') || setweight(to_tsvector('simple', description), 'B')"
    " || setweight(to_tsvector('simple', location), 'C'))"
)

revision = "events0002"
down_revision = "events0001"
branch_labels = None
depends_on = None


def _replace_index(expression: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Build the new index first and swap it in: CREATE INDEX only blocks
    # writes, while DROP INDEX locks the table against reads too, until commit.
    op.execute(f"CREATE INDEX ix_events_search_new ON events USING gin ({expression})")
    op.execute("DROP INDEX IF EXISTS ix_events_search")
    op.execute("ALTER INDEX ix_events_search_new RENAME TO ix_events_search")


def upgrade() -> None:
    _replace_index(NEW_TSVECTOR)


def downgrade() -> None:
    _replace_index(OLD_TSVECTOR)
