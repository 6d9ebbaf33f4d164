"""The command line: chronos backup [--verify], chronos backup prune --dry-run, chronos restore ARCHIVE."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest
import yaml


def chronos(cfg, *args, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHRONOS")}
    done = subprocess.run(
        [sys.executable, "-m", "chronos.cli", "--config", str(cfg), *args],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def setup(tmp_path):
    db = tmp_path / "data" / "chronos.db"
    cfg = tmp_path / "chronos.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "database": {"url": f"sqlite+aiosqlite:///{db}"},
                "plugins": {"enabled": ["backups"]},
                "logging": {"level": "error"},
                "backups": {
                    "directory": str(tmp_path / "backups"),
                    "keep_daily": 1,
                    "keep_weekly": 0,
                    "keep_monthly": 0,
                    "verify_after_backup": False,
                },  # fmt: skip
            }
        )
    )
    return cfg, db, tmp_path / "backups"


@pytest.mark.backends("sqlite")
def test_backup_prune_and_restore_from_the_command_line(setup):
    cfg, db, backups = setup
    chronos(cfg, "migrate")
    first = chronos(cfg, "backup", "--verify")
    assert "verified" in first.stdout and first.stdout.startswith("backup chronos-")
    second = chronos(cfg, "backup")
    assert "not verified" in second.stdout
    listed = chronos(cfg, "backup", "list").stdout.splitlines()
    assert len(listed) == 2 and "verified" in listed[1]

    dry = chronos(cfg, "backup", "prune", "--dry-run").stdout
    assert "would delete" not in dry  # one day: the newest stays, and the first is the newest verified
    assert "newest verified" in dry and "daily" in dry
    assert len(list(backups.glob("*.tar"))) == 2

    # Change the database, then restore the first archive by its id.
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO job_runs (job, trigger, status, started_at) VALUES ('x', 'manual', 'ok', '2026-01-01')")
    conn.commit()
    conn.close()
    backup_id = first.stdout.split()[1].rstrip(":")
    refused = chronos(cfg, "restore", str(backups / "missing.tar"), "--yes", check=False)
    assert refused.returncode == 2 and "no archive" in refused.stderr
    done = chronos(cfg, "restore", backup_id, "--yes")
    assert "restored" in done.stdout and ".before-restore-" in done.stdout
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM job_runs WHERE job = 'x'").fetchone()[0] == 0
    conn.close()
    kept = list(db.parent.glob("chronos.db.before-restore-*"))
    assert len(kept) == 1
    conn = sqlite3.connect(kept[0])
    assert conn.execute("SELECT count(*) FROM job_runs WHERE job = 'x'").fetchone()[0] == 1
    conn.close()


def test_a_cli_record_is_a_group_or_one_command():
    import typer

    from chronos.plugin import CliCommand

    def restore_cmd(archive: str) -> None: ...

    assert CliCommand("restore", command=restore_cmd).app is None
    assert CliCommand("backup", typer.Typer()).command is None
    for wrong in ({}, {"app": typer.Typer(), "command": restore_cmd}):
        with pytest.raises(ValueError, match="give app .* or command"):
            CliCommand("restore", **wrong)
