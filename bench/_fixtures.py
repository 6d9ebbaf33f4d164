"""Setup shared by the command-queue benchmarks (``commands.py``, ``production.py``): never measured."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any


def command_rows(start: int, stop: int, now: datetime) -> list[dict[str, Any]]:
    """Rows of ``external_commands`` for a bulk insert: due ``bench``/``PING`` commands ``n = start .. stop - 1``."""
    return [
        dict(
            target_system="bench",
            command="PING",
            params_json={"n": i},
            args=[],
            status="pending",
            attempts=0,
            max_attempts=5,
            not_before=now,
            idempotency_key=f"bench:{uuid.uuid4().hex}",
            origin="api",
            workflow_depth=0,
            created_at=now,
            updated_at=now,
        )
        for i in range(start, stop)
    ]


async def make_schema(url: str, schema: str, drop: bool = False) -> None:
    """Create (or drop, with everything in it) a schema of the PostgreSQL database at ``url``."""
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(url, poolclass=NullPool)
    async with engine.begin() as conn:
        sql = f'DROP SCHEMA IF EXISTS "{schema}" CASCADE' if drop else f'CREATE SCHEMA "{schema}"'
        await conn.exec_driver_sql(sql)
    await engine.dispose()
