"""Backups through the API on both backends: create, progress, list, download, verify, delete."""

from __future__ import annotations

import json
import tarfile

from chronos.testing import FakeSource, audit_entries, fake_source_plugin, sync_now

from chronos_backups.archive import read_manifest


async def test_a_backup_is_made_listed_downloaded_verified_and_deleted(
    chronos_app, api_client, backup_dir, db_backend, bk
):
    src = FakeSource()
    for i in range(30):
        src.put(f"uid-{i}", f"Meeting {i}")
    plugins = ["events", "backups", fake_source_plugin(src)]
    async with chronos_app(plugins=plugins, config=bk.config(backup_dir)) as app:
        await sync_now(app, "fake", "cal")
        c = await api_client(app, scopes=["backups.manage"])
        r = await c.post("/api/v1/backups")
        assert r.status_code == 202, r.text
        backup_id = r.json()["id"]
        assert r.headers["location"] == f"/api/v1/backups/{backup_id}"
        done = await bk.wait_backup(c, backup_id)
        assert done["status"] == "complete", done
        assert done["verified"] is True and done["backend"] == db_backend
        assert {c["table"]: c["rows"] for c in done["row_counts"]}["events"] == 30

        archive = backup_dir / done["file"]
        manifest = read_manifest(archive, None)
        assert manifest["product"] == "chronos-engine" and manifest["format_version"] == 1
        assert "backups" in manifest["plugins"] and manifest["duration_ms"] >= 0
        assert any(t.startswith("alembic_version") for t in manifest["revisions"])
        with tarfile.open(archive) as tar:
            names = tar.getnames()
            config_doc = json.load(tar.extractfile("config/effective.json"))
        assert names[0] == "manifest.json" and manifest["database_member"] in names
        assert set(manifest["members"]) == set(names) - {"manifest.json"}
        assert config_doc["database"]["url"] and "backups" in config_doc

        page = (await c.get("/api/v1/backups")).json()
        assert [b["id"] for b in page["items"]] == [backup_id] and page["next_cursor"] is None

        r = await c.get(f"/api/v1/backups/{backup_id}/download")
        assert r.status_code == 200 and r.content == archive.read_bytes()

        r = await c.post(f"/api/v1/backups/{backup_id}/verify")
        assert r.status_code == 200 and r.json()["ok"] is True, r.text

        assert (await c.delete(f"/api/v1/backups/{backup_id}")).status_code == 204
        assert (await c.get(f"/api/v1/backups/{backup_id}")).status_code == 404
        assert not archive.exists()
        actions = [e["action"] for e in await audit_entries(app, entity="backup")]
        assert actions == ["create", "verify", "delete"]

        other = await api_client(app, scopes=["events.read"])
        assert (await other.get("/api/v1/backups")).status_code == 403
        admin = await api_client(app, scopes=["admin"])
        assert (await admin.get("/api/v1/backups")).status_code == 200


async def test_secrets_are_redacted_in_the_stored_configuration(chronos_app, api_client, backup_dir, bk):
    env = {"CHRONOS__BACKUPS__PASSPHRASE": "correct horse battery staple"}
    async with chronos_app(plugins=["backups"], config=bk.config(backup_dir), env=env) as app:
        c = await api_client(app, scopes=["backups.manage"])
        done = await bk.wait_backup(c, (await c.post("/api/v1/backups")).json()["id"])
    with tarfile.open(backup_dir / done["file"]) as tar:
        text = tar.extractfile("config/effective.json").read().decode()
    assert "correct horse" not in text
    stored = json.loads(text)
    assert stored["backups"]["passphrase"] == "***" and stored["backups"]["keep_daily"] == 7
    assert stored["auth"]["max_key_lifetime_days"] is None and stored["auth"]["accept_x_api_key"] is True


def test_urls_lose_their_passwords_and_secret_keys_their_values():
    from chronos_backups.service import redacted

    doc = redacted({
        "database": {"url": "postgresql+asyncpg://app:s3cret@db/chronos"},
        "n8n": {"auth_header_value": "v", "signing_secret": "whsec_x", "timeout_seconds": 15},
        "slack": {"webhook_url": None, "channel": "#ops", "hooks": ["https://hooks.example/services/T0/B1/XyZ"]},
        "ics": {"calendars": [{"id": "team", "url": "https://u:p@feeds.example:8443/private/abc.ics?token=1"}]},
    })  # fmt: skip
    assert doc == {
        "database": {"url": "postgresql+asyncpg://app:***@db/chronos"},
        "n8n": {"auth_header_value": "***", "signing_secret": "***", "timeout_seconds": 15},
        "slack": {"webhook_url": None, "channel": "#ops", "hooks": ["https://hooks.example"]},
        "ics": {"calendars": [{"id": "team", "url": "https://feeds.example:8443"}]},
    }


async def test_an_archive_is_a_plain_tar_file(chronos_app, backup_dir, bk, tmp_path):
    import subprocess

    from chronos.testing import runtime_of

    from chronos_backups import service

    assets = tmp_path / "assets"
    (assets / "img").mkdir(parents=True)
    (assets / "img" / "logo.svg").write_text("<svg/>")
    async with chronos_app(plugins=["backups"], config=bk.config(backup_dir, assets=[str(assets)])) as app:
        view = await service.create_backup(runtime_of(app).ctx, service.new_backup_id())
    archive = backup_dir / view["file"]
    listing = subprocess.run(["tar", "-tf", str(archive)], capture_output=True, text=True, check=True).stdout.split()
    assert listing[0] == "manifest.json" and "assets/0-assets/img/logo.svg" in listing
    extracted = subprocess.run(["tar", "-xOf", str(archive), "assets/0-assets/img/logo.svg"], capture_output=True)
    assert extracted.stdout == b"<svg/>"
    manifest = json.loads(subprocess.run(["tar", "-xOf", str(archive), "manifest.json"], capture_output=True).stdout)
    assert manifest["members"]["assets/0-assets/img/logo.svg"]["size"] == 6
