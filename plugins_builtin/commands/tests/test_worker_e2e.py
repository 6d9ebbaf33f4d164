"""The example worker against a live server: a real uvicorn on a free port."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import sys
from pathlib import Path

import pytest
import uvicorn

WORKER = Path(__file__).resolve().parents[3] / "examples" / "clients" / "command_worker.py"


def load_worker_module():
    spec = importlib.util.spec_from_file_location("command_worker_example", WORKER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def live_server():
    """``async with live_server(app) as base_url``: uvicorn serving an app whose lifespan already runs."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def serve(app):
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await task

    return serve


async def test_the_example_worker_end_to_end(commands_app, api_client, live_server):
    from chronos.testing import create_test_key

    mod = load_worker_module()
    async with commands_app(max_lease_seconds=60) as app, live_server(app) as base:
        manager = await api_client(app, scopes=["commands.manage"])
        key = await create_test_key(app, ["events.read"], systems=["homeserver"], name="worker")

        async def enqueue(command, params):
            r = await manager.post(
                "/api/v1/commands", json={"target_system": "homeserver", "command": command, "params": params}
            )
            assert r.status_code == 201, r.text
            return r.json()["id"]

        slow_calls = 0

        async def slow(command):  # work longer than the 3 s lease: only the heartbeat keeps it
            nonlocal slow_calls
            slow_calls += 1
            await asyncio.sleep(4)
            return {"slept": True}

        async def flaky(command):
            raise mod.Retry("device busy", after_seconds=3600)

        handlers = {"PING": mod.ping, "LIGHT": slow, "PRINT": flaky}
        ping_id = await enqueue("PING", {"n": "42", "text": "héllo <b>"})
        slow_id = await enqueue("LIGHT", {"room": "hall"})
        worker = mod.CommandWorker(base, key, "homeserver", handlers, lease_seconds=3, batch=5, idle_seconds=0.1)
        rival = mod.CommandWorker(base, key, "homeserver", handlers, lease_seconds=3, batch=5, idle_seconds=0.1)
        stop = asyncio.Event()
        runs = [asyncio.create_task(worker.run(stop)), None]
        await asyncio.sleep(0.3)
        runs[1] = asyncio.create_task(rival.run(stop))  # polls (and recovers expired leases) all along
        for _ in range(300):
            if len(worker.handled) + len(rival.handled) >= 2:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*runs)
        await worker.close()
        await rival.close()

        assert slow_calls == 1
        assert sorted(worker.handled + rival.handled) == sorted([(ping_id, "complete"), (slow_id, "complete")])
        done = {c["id"]: c for c in (await manager.get("/api/v1/commands")).json()["items"]}
        assert done[ping_id]["status"] == "completed"
        assert done[ping_id]["result"] == {"pong": {"n": "42", "text": "héllo <b>"}, "args": []}
        assert done[slow_id]["status"] == "completed" and done[slow_id]["attempts"] == 1

        # Failures: a retry request goes back to the queue; an unknown command fails for good.
        office = await manager.post(
            "/api/v1/commands", json={"target_system": "office", "command": "PRINT", "params": {"doc": "x"}}
        )
        office_key = await create_test_key(app, ["events.read"], systems=["office"], name="office")
        w2 = mod.CommandWorker(base, office_key, "office", {"PRINT": flaky}, lease_seconds=5, idle_seconds=0.1)
        assert await w2.run_once() == 1
        assert (await w2.run_once()) == 0  # backing off for an hour
        w3 = mod.CommandWorker(base, key, "homeserver", {}, idle_seconds=0.1)
        unknown = await enqueue("PING", {"n": "1"})
        assert await w3.run_once() == 1
        # A key bound to homeserver cannot poll office.
        r = await w3.client.get("/api/v1/commands/office")
        assert r.status_code == 403
        await w2.close()
        await w3.close()
        states = {c["id"]: c for c in (await manager.get("/api/v1/commands")).json()["items"]}
        assert (
            states[office.json()["id"]]["status"] == "pending" and states[office.json()["id"]]["error"] == "device busy"
        )
        assert states[unknown]["status"] == "failed" and "no handler for PING" in states[unknown]["error"]
