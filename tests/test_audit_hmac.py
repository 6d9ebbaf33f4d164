"""Audit you can rely on: an HMAC chain keyed outside the database, signed head checkpoints,
a migration story for rows chained before the switch."""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
from pathlib import Path

from sqlalchemy import delete, insert, select, text, update

from chronos.audit import GENESIS, _content, _digest, verify_chain
from chronos.audit_key import key_file_path
from chronos.db.base import utcnow
from chronos.db.models import AuditCheckpoint, AuditEntry
from chronos.testing import runtime_of
from kernel_support import db_config, invoke_cli, invoke_cli_async, write_config

KEY = "k3y-" + "0123456789abcdef" * 3


async def make_rows(app, api_client, n: int) -> list[AuditEntry]:
    admin = await api_client(app, scopes=["admin"])
    for i in range(n):
        r = await admin.post("/api/v1/keys", json={"name": f"k{i}", "scopes": ["events.read"]})
        assert r.status_code == 201, r.text
    return await rows(app)


async def rows(app) -> list[AuditEntry]:
    async with app.state.chronos.db.read() as s:
        return list((await s.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars())


async def verify(app):
    async with app.state.chronos.db.read() as s:
        return await verify_chain(s)


async def test_rows_are_chained_with_an_hmac_of_a_key_outside_the_database(chronos_app, api_client, monkeypatch):
    monkeypatch.setenv("CHRONOS_AUDIT_KEY", KEY)
    async with chronos_app() as app:
        entries = await make_rows(app, api_client, 3)
        for e in entries:
            payload = (
                e.prev_hash
                + json.dumps(_content(e), sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
            ).encode()
            assert e.hash == hmac.new(KEY.encode(), payload, hashlib.sha256).hexdigest()
            assert e.hash != hashlib.sha256(payload).hexdigest()
        assert (await verify(app))[1:] == (None, None)

        # Someone with write access to the database but without the key rewrites a row and its hash.
        forged = entries[1]
        forged.actor = "someone-else"
        new_hash = _digest(forged.prev_hash, _content(forged))
        async with app.state.chronos.db.write() as s:
            await s.execute(
                update(AuditEntry).where(AuditEntry.id == forged.id).values(actor="someone-else", hash=new_hash)
            )
            await s.execute(update(AuditEntry).where(AuditEntry.id == entries[2].id).values(prev_hash=new_hash))
        checked, broken, reason = await verify(app)
        assert broken == forged.id and "does not match its hash" in reason


async def test_the_key_file_is_created_beside_the_data_with_mode_0600_and_only_its_path_logged(
    chronos_app, api_client, database, tmp_path, capsys
):
    config = {"logging": {"level": "info"}}
    if database.backend == "postgresql":
        config["audit"] = {"key_file": str(tmp_path / "keys" / "audit.key")}
    async with chronos_app(config=config) as app:
        settings = runtime_of(app).settings
        path = key_file_path(settings)
        if database.backend == "sqlite":
            assert path.parent == Path(database.url.partition(":///")[2]).parent and path.name.endswith(".audit-key")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        secret = path.read_text().strip()
        assert len(secret) >= 32
        await make_rows(app, api_client, 1)
    err = capsys.readouterr().err
    assert str(path) in err and secret not in err
    async with chronos_app(config=config) as app:  # the same key on the next start
        assert key_file_path(runtime_of(app).settings).read_text().strip() == secret
        assert (await verify(app))[1:] == (None, None)


async def test_deleted_newest_rows_are_found_against_the_signed_checkpoint(database, chronos_app, api_client, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", db_config(database, plugins={"enabled": []}))
    async with chronos_app() as app:
        entries = await make_rows(app, api_client, 4)
        await runtime_of(app).runner.run_now("audit.checkpoint")
        async with app.state.chronos.db.read() as s:
            newest = (await s.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()))).scalars().first()
        assert newest.last_id == entries[-1].id
        assert (await verify(app)) == (4, None, None)

        async with app.state.chronos.db.write() as s:
            await s.execute(delete(AuditEntry).where(AuditEntry.id >= entries[2].id))
        checked, broken, reason = await verify(app)
        assert (checked, broken) == (2, entries[-1].id) and "newest rows were deleted" in reason
        res = await invoke_cli_async("audit", "verify", config=cfg)
        assert res.returncode == 1 and "newest rows were deleted" in res.stderr

        # A checkpoint cannot be forged or moved back without the key.
        async with app.state.chronos.db.write() as s:
            await s.execute(
                update(AuditCheckpoint)
                .where(AuditCheckpoint.id == newest.id)
                .values(last_id=entries[1].id, last_hash=entries[1].hash)
            )
        checked, broken, reason = await verify(app)
        assert broken == 0 and "no valid signature" in reason

        # Deleting every checkpoint leaves a head nobody signed.
        async with app.state.chronos.db.write() as s:
            await s.execute(delete(AuditCheckpoint))
        assert (await verify(app))[2].startswith("no signed checkpoint")


async def test_a_checkpoint_is_written_on_shutdown(chronos_app, api_client):
    async with chronos_app() as app:
        entries = await make_rows(app, api_client, 2)
    async with chronos_app() as app:
        async with app.state.chronos.db.read() as s:
            newest = (await s.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()))).scalars().first()
        assert newest.last_id == entries[-1].id and newest.last_hash == entries[-1].hash


async def test_rows_chained_before_the_switch_keep_verifying_with_the_plain_hash(chronos_app, api_client):
    async with chronos_app() as app:
        # A database from before the switch: plain SHA-256 rows and no checkpoint.
        prev, legacy = GENESIS, []
        async with app.state.chronos.db.write() as s:
            for i in range(3):
                row = {
                    "at": utcnow(),
                    "actor": "cli",
                    "scope": None,
                    "entity": "api_key",
                    "entity_id": f"old{i}",
                    "action": "create",
                    "change": {"n": i},
                    "ip": None,
                    "request_id": None,
                    "prev_hash": prev,
                }
                probe = AuditEntry(**row)
                row["hash"] = prev = _digest(prev, _content(probe))
                await s.execute(insert(AuditEntry).values(**row))
                legacy.append(row)
            assert (await s.execute(select(AuditCheckpoint))).first() is None

        entries = await make_rows(app, api_client, 2)  # the first write after the switch
        async with app.state.chronos.db.read() as s:
            first = (await s.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.id))).scalars().first()
        assert first.legacy_until == entries[2].id  # the last plain row marks the switch
        assert entries[3].prev_hash == entries[2].hash and entries[3].hash != _digest(
            entries[3].prev_hash, _content(entries[3])
        )
        assert (await verify(app)) == (5, None, None)

        # A plain-hash row after the switch is refused: only the key may extend the chain.
        async with app.state.chronos.db.write() as s:
            await s.execute(
                update(AuditEntry)
                .where(AuditEntry.id == entries[4].id)
                .values(hash=_digest(entries[4].prev_hash, _content(entries[4])))
            )
        assert (await verify(app))[1] == entries[4].id

        # Legacy rows are still checked (with the plain hash).
        async with app.state.chronos.db.write() as s:
            await s.execute(text("UPDATE audit_log SET actor = 'x' WHERE id = :id"), {"id": entries[1].id})
        checked, broken, reason = await verify(app)
        assert (checked, broken) == (1, entries[1].id) and "does not match its hash" in reason


def test_verify_without_the_key_says_so_and_creates_no_key(database, tmp_path):
    missing = tmp_path / "elsewhere" / "audit.key"
    cfg = write_config(
        tmp_path / "c.yaml", db_config(database, plugins={"enabled": []}, audit={"key_file": str(missing)})
    )
    res = invoke_cli("audit", "verify", config=cfg)
    assert res.returncode == 1
    assert res.stderr.strip().startswith("error: no audit key:") and str(missing) in res.stderr
    assert not missing.exists()
