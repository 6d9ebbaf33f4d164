"""Bad input: every broken archive is a clear error and the current database stays as it was."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile

import pytest

from chronos.testing import FakeSource, fake_source_plugin, runtime_of, sync_now

from chronos_backups import service
from chronos_backups.restore import RestoreError, restore


def members(path):
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]


def rewrite(path, out, *, manifest=None, change=None, extra=()):
    """A copy of the archive at ``path``: its manifest edited by ``manifest(m)``, a member's bytes
    by ``change(name, data)``, and ``extra`` (name, data) members appended."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members(path):
            if info.name == "manifest.json" and manifest is not None:
                doc = json.loads(data)
                manifest(doc)
                data = json.dumps(doc).encode()
            elif change is not None:
                data = change(info.name, data)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, data in extra:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def flip_config(name, data):
    return data.replace(b'"url"', b'"URL"') if name == "config/effective.json" else data


def set_format(doc):
    doc["format_version"] = 99


def set_product(doc):
    doc["product"] = "someone-elses-app"


def newer_revision(doc):
    doc["revisions"]["alembic_version"] = ["zz_from_the_future"]


def listed(name):
    def edit(doc):
        doc["members"][name] = {"size": 4, "sha256": hashlib.sha256(b"evil").hexdigest()}

    return edit


CASES = {
    "truncated": (lambda a, out: (out.write_bytes(a.read_bytes()[: a.stat().st_size // 2]), out)[1], "truncated"),
    "hash mismatch": (lambda a, out: rewrite(a, out, change=flip_config), "does not match its sha256"),
    "newer format": (lambda a, out: rewrite(a, out, manifest=set_format), "newer than this installation reads"),
    "other product": (lambda a, out: rewrite(a, out, manifest=set_product), "backup of another product"),
    "newer revision": (lambda a, out: rewrite(a, out, manifest=newer_revision), "newer than this installation"),
    "dot-dot member": (
        lambda a, out: rewrite(a, out, extra=[("assets/../../evil.txt", b"evil")]),
        "path leaves the archive",
    ),
    "absolute member": (
        lambda a, out: rewrite(a, out, manifest=listed("/tmp/evil.txt"), extra=[("/tmp/evil.txt", b"evil")]),
        "absolute path",
    ),
    "unlisted member": (lambda a, out: rewrite(a, out, extra=[("assets/0-x/new.txt", b"evil")]), "not listed"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_bad_archive_is_refused_and_the_database_untouched(
    case, chronos_app, api_client, backup_dir, bk, tmp_path, db_backend
):
    src = FakeSource()
    src.put("uid-1", "Standup")
    async with chronos_app(plugins=["events", "backups", fake_source_plugin(src)], config=bk.config(backup_dir)) as app:
        await sync_now(app, "fake", "cal")
        ctx = runtime_of(app).ctx
        good = await service.create_backup(ctx, service.new_backup_id())
        make, message = CASES[case]
        bad = make(backup_dir / good["file"], backup_dir / "bad-archive.tar")
        c = await api_client(app, scopes=["backups.manage"])
        verdict = (await c.post("/api/v1/backups/bad-archive/verify")).json()
        if case == "newer revision":  # a sound archive, only too new for this code
            assert verdict["ok"] is True, verdict
        else:
            assert verdict["ok"] is False and message in verdict["error"], verdict
        src.put("uid-2", "Added after the backup")
        await sync_now(app, "fake", "cal")
    before = await bk.table_rows(ctx)
    with pytest.raises(RestoreError, match="cannot be restored|newer than this installation") as err:
        await restore(ctx, bad)
    assert message in str(err.value)
    assert await bk.table_rows(ctx) == before
    assert not (tmp_path / "evil.txt").exists() and not list(backup_dir.glob(".restore-*"))
    await ctx.db.dispose()


@pytest.mark.backends("sqlite")
async def test_a_wrong_passphrase_is_refused(chronos_app, backup_dir, bk):
    env = {"CHRONOS__BACKUPS__PASSPHRASE": "the right one"}
    config = bk.config(backup_dir, encrypt=True)
    async with chronos_app(plugins=["backups"], config=config, env=env) as app:
        ctx = runtime_of(app).ctx
        snapshot = await bk.table_rows(ctx)
        view = await service.create_backup(ctx, service.new_backup_id())
    archive = backup_dir / view["file"]
    assert archive.name.endswith(".tar.enc") and view["verified"]
    assert b"SQLite format 3" not in archive.read_bytes()
    async with chronos_app(plugins=["backups"], config=config, env={"CHRONOS__BACKUPS__PASSPHRASE": "wrong"}) as app:
        other = runtime_of(app).ctx
        assert (await service.get_backup(other, view["id"]))["status"] == "invalid"
    before = await bk.table_rows(ctx)
    with pytest.raises(RestoreError, match="wrong passphrase"):
        await restore(other, archive)
    assert await bk.table_rows(ctx) == before
    await other.db.dispose()
    # The right passphrase restores it (connections opened before the swap still see the old file).
    await ctx.db.dispose()
    result = await restore(ctx, archive)
    assert result["previous"] and await bk.table_rows(ctx) == snapshot
    await ctx.db.dispose()
    await ctx.db.dispose()


@pytest.mark.backends("sqlite")
async def test_an_encrypted_archive_cut_short_is_truncated(chronos_app, backup_dir, bk, tmp_path):
    env = {"CHRONOS__BACKUPS__PASSPHRASE": "the right one"}
    async with chronos_app(plugins=["backups"], config=bk.config(backup_dir, encrypt=True), env=env) as app:
        ctx = runtime_of(app).ctx
        view = await service.create_backup(ctx, service.new_backup_id())
        archive = backup_dir / view["file"]
        cut = backup_dir / "cut.tar.enc"
        cut.write_bytes(archive.read_bytes()[:-100])
        record = await service.verify_path(ctx.resource(service.STORE), cut)
    assert record["ok"] is False and "truncated" in record["error"]


@pytest.fixture
def tiny_dir(tmp_path):
    d = tmp_path / "tiny"
    d.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], capture_output=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a size-limited tmpfs: {mounted.stderr.decode().strip()}")
    yield d
    subprocess.run(["umount", str(d)], check=True)


@pytest.mark.backends("sqlite")
async def test_a_full_disk_leaves_nothing_that_looks_like_an_archive(chronos_app, api_client, bk, tmp_path, tiny_dir):
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "banner.png").write_bytes(b"\x89PNG" + bytes(3 * 1024 * 1024))
    config = bk.config(tiny_dir, assets=[str(assets)])
    async with chronos_app(plugins=["backups"], config=config) as app:
        c = await api_client(app, scopes=["backups.manage"])
        backup_id = (await c.post("/api/v1/backups")).json()["id"]
        failed = await bk.wait_backup(c, backup_id)
        assert failed["status"] == "failed" and "No space left on device" in failed["error"], failed
        assert sorted(p.name for p in tiny_dir.iterdir()) == []
        listed = (await c.get("/api/v1/backups")).json()["items"]
        assert [(b["id"], b["status"]) for b in listed] == [(backup_id, "failed")]
        assert (await c.delete(f"/api/v1/backups/{backup_id}")).status_code == 204
        assert (await c.get("/api/v1/backups")).json()["items"] == []


@pytest.mark.backends("postgresql")
async def test_without_pg_dump_a_postgresql_backup_fails_clearly(chronos_app, api_client, backup_dir, bk):
    async with chronos_app(plugins=["backups"], config=bk.config(backup_dir, pg_dump="pg_dump-not-installed")) as app:
        c = await api_client(app, scopes=["backups.manage"])
        failed = await bk.wait_backup(c, (await c.post("/api/v1/backups")).json()["id"])
    assert failed["status"] == "failed"
    assert "need the pg_dump-not-installed binary, which is not installed" in failed["error"]
    assert list(backup_dir.iterdir()) == []


@pytest.mark.backends("postgresql")
async def test_an_archive_that_fails_verification_fails_the_job(chronos_app, api_client, backup_dir, bk):
    config = bk.config(backup_dir, pg_restore="pg_restore-not-installed")
    async with chronos_app(plugins=["backups"], config=config) as app:
        ctx = runtime_of(app).ctx
        assert await ctx.jobs.run_now(service.BACKUP_JOB) is None  # the runner recorded the failure
        c = await api_client(app, scopes=["backups.manage", "admin"])
        [made] = (await c.get("/api/v1/backups")).json()["items"]
        assert made["status"] == "complete" and made["verified"] is False and "pg_restore" in made["verify_error"]
        [job] = [j for j in (await c.get("/api/v1/jobs")).json() if j["name"] == service.BACKUP_JOB]
        assert job["last_run"]["status"] == "error"
        assert (
            "failed its verification" in job["last_run"]["error"] and "backups.pg_restore" in job["last_run"]["error"]
        )
