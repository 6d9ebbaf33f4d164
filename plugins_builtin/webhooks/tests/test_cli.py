"""``chronos outbox list | replay | purge-dead`` against a real database."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from kernel_support import clean_env, db_config, write_config
from webhooks_support import PLUGINS, Reply, dispatch, publish, webhooks_config


async def test_list_replay_and_purge_dead_letters(chronos_app, api_client, receiver, database, tmp_path):
    receiver.default = Reply(400)
    async with chronos_app(plugins=PLUGINS, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        await c.post("/api/v1/webhooks", json={"url": receiver.url})
        await publish(app, n=1)
        await publish(app, n=2)
        await dispatch(app)
    config = write_config(
        tmp_path / "chronos.yaml",
        db_config(database, plugins={"enabled": ["webhooks"]}, **webhooks_config()),
    )

    async def cli(*args):
        # Plugin commands are mounted from the real command line: run the CLI as users do.
        cmd = [sys.executable, "-m", "chronos.cli", "--config", str(config), *args]
        return await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, env=clean_env(), timeout=60)

    res = await cli("outbox", "list", "--json")
    assert res.returncode == 0, res.stderr
    dead = json.loads(res.stdout)
    assert [d["status"] for d in dead] == ["dead", "dead"] and all(d["last_status_code"] == 400 for d in dead)
    table = await cli("outbox", "list")
    assert str(dead[0]["id"]) in table.stdout and "HTTP 400" in table.stdout

    res = await cli("outbox", "replay", str(dead[0]["id"]))
    assert res.returncode == 0 and "pending again" in res.stdout
    pending = json.loads((await cli("outbox", "list", "--status", "pending", "--json")).stdout)
    assert [(d["id"], d["webhook_id"]) for d in pending] == [(dead[0]["id"], dead[0]["webhook_id"])]

    assert "0 dead letter(s) deleted" in (await cli("outbox", "purge-dead", "--older-than", "30d")).stdout
    assert "1 dead letter(s) deleted" in (await cli("outbox", "purge-dead", "--older-than", "0s")).stdout
    missing = await cli("outbox", "replay", str(dead[1]["id"]))
    assert missing.returncode == 1 and "No dead letter" in missing.stderr
    bad = await cli("outbox", "purge-dead", "--older-than", "a month")
    assert bad.returncode == 2
