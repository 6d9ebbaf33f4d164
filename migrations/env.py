"""The only alembic environment: used for the kernel and for every plugin.

The runner (``chronos.db.migrate``) passes, through ``config.attributes``, the
open connection, the owner's version table and the tables it owns; the filters
below keep each owner's autogenerate and check to its own tables and ignore
SQLite's FTS virtual and shadow tables.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from sqlalchemy import text

from chronos.db.base import UTCDateTime, metadata

config = context.config
VERSION_TABLE = config.attributes.get("version_table", "alembic_version")
OWNED = config.attributes.get("tables")


def run(connection) -> None:
    skip: set[str] = set()
    if connection.dialect.name == "sqlite":
        rows = connection.execute(text("PRAGMA table_list")).all()
        skip = {r[1] for r in rows if r[2] in ("virtual", "shadow")}

    def include_name(name, type_, parent_names):
        if type_ == "table":
            if name in skip or name.startswith(("alembic_version", "sqlite_")):
                return False
            return OWNED is None or name in OWNED
        # Indexes created by raw DDL in a revision (a GIN expression index on one backend only) are not compared.
        return not (type_ == "index" and name in metadata.info.get("unmapped_indexes", ()))

    def include_object(obj, name, type_, reflected, compare_to):
        if type_ == "table" and OWNED is not None:
            return name in OWNED
        return True

    def render_item(type_, obj, autogen_context):
        # Render the kernel's column types as plain SQLAlchemy so revisions stay
        # importable without the model code they were generated from.
        if type_ != "type":
            return False
        if isinstance(obj, UTCDateTime):
            return "sa.DateTime(timezone=True)"
        if isinstance(obj, sa.JSON):
            autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
            return "sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')"
        return False

    context.configure(
        connection=connection,
        render_item=render_item,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        include_object=include_object,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `chronos migrate`, which opens the connection")
run(connection)
