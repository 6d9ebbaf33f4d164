"""``bench/production.py`` in its smallest mode: real ``chronos serve`` and ``chronos worker`` processes on
SQLite, real HTTP. Checks the table's shape and the figures that must be 0 (locked errors, lost writes,
commands handed out twice, 5xx); never a speed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [
    "scenario",
    "database",
    "topology",
    "clients",
    "seconds",
    "operations",
    "per second",
    "p50 ms",
    "p99 ms",
    "checks",
    "per server CPU-s",
    "server RSS MB",
    "CPU server / client / rest",
]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_quick_mode_on_sqlite_prints_the_table_with_nothing_lost() -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHRONOS")}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "production.py"),
            "--seconds",
            "1",
            "--backends",
            "sqlite",
            "--modes",
            "batched",
            "--lease-limit",
            "10",
            "--events",
            "300",
        ],
        capture_output=True,
        text=True,
        timeout=140,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert cells(table[0]) == COLUMNS
    assert set(table[1].replace("|", "")) == {"-"}
    rows = {(r[0], r[1]): dict(zip(COLUMNS, r, strict=True)) for r in map(cells, table[2:])}
    assert set(rows) == {("writers", "SQLite"), ("reads", "SQLite"), ("queue batched, 10/poll", "SQLite")}

    writers = rows[("writers", "SQLite")]
    assert writers["checks"] == "0 locked, 0 lost"
    assert int(writers["operations"].replace(",", "")) > 0
    assert writers["clients"] == "16"

    reads = rows[("reads", "SQLite")]
    assert reads["checks"] == "0 5xx"
    assert reads["clients"] == "200"
    assert float(reads["p99 ms"]) >= float(reads["p50 ms"]) > 0

    queue = rows[("queue batched, 10/poll", "SQLite")]
    assert queue["checks"] == "0 dup, 0 lost"
    assert int(queue["operations"].replace(",", "")) > 0
    assert queue["clients"] == "8"

    for row in rows.values():
        assert row["topology"] == "1 API + worker"
        api, worker = (float(mb) for mb in row["server RSS MB"].split(" + "))
        assert api > 20 and worker > 20  # both processes were alive when measured
        assert len(row["CPU server / client / rest"].split(" / ")) == 3
