"""Grandfather-father-son retention over a simulated 400 days, on archives placed in the directory by hand."""

from __future__ import annotations

import io
import json
import tarfile
from datetime import UTC, datetime, timedelta

import pytest

from chronos.testing import runtime_of

from chronos_backups import service
from chronos_backups.retention import Dated, plan


def dated_copy(archive, out, when: datetime) -> None:
    """``archive`` as if it had been taken at ``when`` (the manifest dates an archive)."""
    with tarfile.open(archive) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read()
            if info.name == "manifest.json":
                doc = json.loads(data)
                doc["created_at"] = when.isoformat().replace("+00:00", "Z")
                data = json.dumps(doc).encode()
                info.size = len(data)
            dst.addfile(info, io.BytesIO(data))


def expected_kept(dates: list[datetime], daily: int, weekly: int, monthly: int) -> set[datetime]:
    newest_first = sorted(dates, reverse=True)
    keep = set()
    for count, period in ((daily, lambda d: d.date()), (weekly, lambda d: d.isocalendar()[:2]),
                          (monthly, lambda d: (d.year, d.month))):  # fmt: skip
        groups: dict[object, datetime] = {}
        for d in newest_first:
            groups.setdefault(period(d), d)
        keep |= set(sorted(groups.values(), reverse=True)[:count])
    return keep


@pytest.mark.backends("sqlite")
async def test_400_days_of_backups_keep_days_weeks_months_and_the_newest_verified(chronos_app, backup_dir, bk):
    config = bk.config(backup_dir, keep_daily=7, keep_weekly=4, keep_monthly=12, verify_after_backup=False)
    async with chronos_app(plugins=["backups"], config=config) as app:
        ctx = runtime_of(app).ctx
        seed = await service.create_backup(ctx, "seed")
        template = backup_dir / "template.bin"
        (backup_dir / seed["file"]).rename(template)
        start = datetime(2025, 1, 1, 3, 17, tzinfo=UTC)
        made: dict[str, datetime] = {}
        verified_id = None
        for day in range(400):
            when = start + timedelta(days=day)
            backup_id = f"host-b-{when:%Y%m%d}"
            dated_copy(template, backup_dir / f"{backup_id}.tar", when)
            made[backup_id] = when
            if day == 20:  # the only verified archive: it must outlive every rotation
                assert (await service.verify_backup(ctx, backup_id, None))["ok"]
                verified_id = backup_id
            if day % 3 == 0 or day == 399:
                dry = await service.prune(ctx, dry_run=True)
                present = set(ctx.resource(service.STORE).archives())
                result = await service.prune(ctx, dry_run=False)
                assert result["deleted"] == dry["deleted"]
                assert set(ctx.resource(service.STORE).archives()) == present - set(dry["deleted"])
        left = ctx.resource(service.STORE).archives()
        dates = [made[i] for i in left]
        assert verified_id in left
        others = [d for i, d in made.items() if i in left and i != verified_id]
        assert set(others) <= expected_kept(list(made.values()), 7, 4, 12)
        assert expected_kept(list(made.values()), 7, 4, 12) <= set(dates)
        assert len(left) == len(expected_kept(list(made.values()), 7, 4, 12)) + 1
        listing = (await service.list_backups(ctx, limit=200, cursor=None))["items"]
        assert [b["created_at"] for b in listing] == sorted(dates, reverse=True)
        walked, cursor = [], None
        while True:
            page = await service.list_backups(ctx, limit=5, cursor=cursor)
            walked += [b["id"] for b in page["items"]]
            if (cursor := page["next_cursor"]) is None:
                break
        assert walked == [b["id"] for b in listing]


def test_the_plan_names_why_each_archive_stays():
    base = datetime(2026, 3, 31, 12, tzinfo=UTC)
    archives = [Dated(f"a{i}", base - timedelta(days=i), verified=i == 90) for i in range(120)]
    keep, delete = plan(archives, daily=2, weekly=1, monthly=2)
    assert keep["a0"] == ["daily 2026-03-31", "weekly 2026-W14", "monthly 2026-03"]
    assert keep["a1"] == ["daily 2026-03-30"]
    assert keep["a31"] == ["monthly 2026-02"]
    assert keep["a90"] == ["newest verified"]
    assert len(keep) == 4 and len(delete) == 116
    assert plan([], daily=1, weekly=1, monthly=1) == ({}, [])


@pytest.mark.backends("sqlite")
async def test_the_scheduled_backup_applies_retention(chronos_app, backup_dir, bk):
    config = bk.config(backup_dir, keep_daily=2, keep_weekly=0, keep_monthly=0, verify_after_backup=False)
    async with chronos_app(plugins=["backups"], config=config) as app:
        ctx = runtime_of(app).ctx
        seed = await service.create_backup(ctx, "seed")
        template = backup_dir / "template.bin"
        (backup_dir / seed["file"]).rename(template)
        for day in (1, 2, 3):
            dated_copy(template, backup_dir / f"old-{day}.tar", datetime(2026, 1, day, tzinfo=UTC))
        result = await ctx.jobs.run_now(service.BACKUP_JOB, trigger="schedule")
        assert sorted(result["pruned"]) == ["old-1", "old-2"]
        assert set(ctx.resource(service.STORE).archives()) == {result["backup"], "old-3"}
        # A run asked for (API, CLI) makes a backup and leaves retention to the schedule.
        manual = await ctx.jobs.run_now(service.BACKUP_JOB)
        assert manual["pruned"] == [] and len(ctx.resource(service.STORE).archives()) == 3
