"""The command queue with real replicas: 8 pollers over HTTP spread over the API replicas
(``chronos serve --no-jobs``), 5,000 commands, one replica SIGKILLed mid-run and started again.
Every command is completed exactly once, none is lost, and no command is handed out while
another poller's lease on it is alive. Every lease a poller receives and every completion
outcome is recorded and checked against the queue's own records (rows and audit log)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, insert, select

from chronos.db.engine import Database
from chronos.db.models import AuditEntry
from chronos.plugin import utcnow
from production_support import AUTH, deployment, wait_ready

from chronos_commands.models import ExternalCommand

N = 5000
POLLERS = 8
LIMIT = 10
LEASE_SECONDS = 8
SYSTEM = "prod"


@dataclass
class Record:
    leases: list[tuple[int, str, str, int]] = field(default_factory=list)  # id, token, expires_at, poller
    outcomes: list[tuple[int, str, int]] = field(default_factory=list)  # id, token, status
    refused: list[str] = field(default_factory=list)  # any answer other than 200 (and 409 to a completion)
    transport_errors: int = 0


async def seed(db: Database, n: int) -> None:
    """Queue ``n`` commands with bulk inserts (setup; the test is about leasing and completing)."""
    now = utcnow()
    rows = [
        {
            "target_system": SYSTEM,
            "command": "PING",
            "params_json": {"n": i},
            "args": [],
            "status": "pending",
            "attempts": 0,
            "max_attempts": 5,
            "not_before": now,
            "idempotency_key": f"seed:{uuid.uuid4().hex}",
            "origin": "api",
            "workflow_depth": 0,
            "created_at": now,
            "updated_at": now,
        }
        for i in range(n)
    ]
    async with db.write() as s:
        for i in range(0, n, 1000):
            await s.execute(insert(ExternalCommand.__table__), rows[i : i + 1000])


async def completed(db: Database) -> int:
    T = ExternalCommand.__table__
    async with db.read() as s:
        return int((await s.execute(select(func.count()).where(T.c.status == "completed"))).scalar_one())


async def poller(n: int, urls: list[str], record: Record, stop: asyncio.Event) -> None:
    """Lease a batch, acknowledge it with one request; on a dead replica, go to the next one
    (as behind a load balancer) and send the same completion again."""
    k = n % len(urls)

    async def call(method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        nonlocal k
        while not stop.is_set():
            try:
                return await client.request(method, urls[k] + path, **kwargs)
            except httpx.TransportError:
                record.transport_errors += 1
                k = (k + 1) % len(urls)
                await asyncio.sleep(0.05)
        return None

    async with httpx.AsyncClient(headers=AUTH, timeout=30) as client:
        while not stop.is_set():
            r = await call("GET", f"/api/v1/commands/{SYSTEM}", params={"limit": LIMIT, "lease_seconds": LEASE_SECONDS})
            if r is None:
                return
            if r.status_code != 200:
                record.refused.append(f"poll {r.status_code}: {r.text[:200]}")
                continue
            items = r.json()["items"]
            if not items:
                await asyncio.sleep(0.1)
                continue
            record.leases += [(c["id"], c["lease_token"], c["lease_expires_at"], n) for c in items]
            body = {"items": [{"id": c["id"], "lease_token": c["lease_token"], "result": {"n": n}} for c in items]}
            r = await call("POST", "/api/v1/command-completions", json=body)
            if r is None:
                return
            if r.status_code != 200:
                record.refused.append(f"completions {r.status_code}: {r.text[:200]}")
                continue
            tokens = {c["id"]: c["lease_token"] for c in items}
            for o in r.json()["items"]:
                record.outcomes.append((o["id"], tokens[o["id"]], o["status"]))
                if o["status"] not in (200, 409):
                    record.refused.append(f"completion of {o['id']}: {o}")


async def test_pollers_through_a_replica_kill_complete_every_command_once(database, tmp_path):
    replicas = 2 if database.backend == "postgresql" else 1  # SQLite: one server
    whitelist = [{"system": SYSTEM, "action": "PING", "params": {"n": None}}]
    db = Database(database.url, schema=database.schema)
    record, stop = Record(), asyncio.Event()
    try:
        with deployment(
            database, tmp_path, plugins={"enabled": ["commands"]}, commands={"whitelist": whitelist}
        ) as dep:
            servers = [dep.serve() for _ in range(replicas)]
            for server in servers:
                await asyncio.to_thread(wait_ready, server)
            await seed(db, N)
            started = time.monotonic()
            urls = [s.url for s in servers]
            tasks = [asyncio.create_task(poller(i, urls, record, stop)) for i in range(POLLERS)]
            try:
                await _until(lambda: len(record.outcomes) >= N // 3, 120, "a third of the commands done")
                servers[0].kill()
                killed_after = len(record.outcomes)
                await asyncio.sleep(0.5)
                servers[0].start()  # the same port: the pollers find it again
                await asyncio.to_thread(wait_ready, servers[0])

                async def all_done() -> bool:
                    return await completed(db) == N

                await _until(all_done, 240, "every command completed")
            finally:
                stop.set()
                await asyncio.gather(*tasks)
            elapsed = time.monotonic() - started
        await _check(db, record)
        print(
            f"\nqueue kill test [{database.backend}]: {N} commands, {len(record.leases)} leases, "
            f"{record.transport_errors} transport errors, killed after {killed_after} outcomes, {elapsed:.1f}s"
        )
    finally:
        await db.dispose()


async def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


async def _check(db: Database, record: Record) -> None:
    assert record.refused == []
    T = ExternalCommand.__table__
    async with db.read() as s:
        rows = (await s.execute(select(T.c.id, T.c.status, T.c.lease_token))).all()
        audit = (
            await s.execute(
                select(AuditEntry.entity_id, AuditEntry.action, AuditEntry.change).where(
                    AuditEntry.entity == "command", AuditEntry.action.in_(["lease", "complete", "lease_expired"])
                )
            )
        ).all()
    # None lost: every command completed.
    assert len(rows) == N and {status for _, status, _ in rows} == {"completed"}
    # None completed twice: one completion in the queue's audit log per command, and one lease
    # (token) whose completion the queue accepted, the one the row keeps.
    completions: dict[str, int] = defaultdict(int)
    leases: dict[int, list[datetime]] = defaultdict(list)
    for entity_id, action, change in audit:
        if action == "complete":
            completions[entity_id] += 1
        elif action == "lease":
            leases[int(entity_id)].append(datetime.fromisoformat(change["expires_at"]))
    assert len(completions) == N and set(completions.values()) == {1}
    accepted: dict[int, set[str]] = defaultdict(set)
    for command_id, token, status in record.outcomes:
        if status == 200:
            accepted[command_id].add(token)
    final_token = {command_id: token for command_id, _, token in rows}
    assert {cid: tokens for cid, tokens in accepted.items() if len(tokens) != 1} == {}
    assert {cid: next(iter(tokens)) for cid, tokens in accepted.items()} == {cid: final_token[cid] for cid in accepted}
    # Never handed out within a live lease: each lease (all of them, including those whose
    # answer was lost with the killed replica) begins after the previous one expired.
    lease = timedelta(seconds=LEASE_SECONDS)
    for command_id, expiries in leases.items():
        expiries.sort()
        for before, after in zip(expiries, expiries[1:], strict=False):
            assert after - lease >= before, f"command {command_id} leased again within a live lease: {expiries}"
    # Every lease a poller received is one the queue recorded; no token was handed out twice.
    seen = {(cid, datetime.fromisoformat(exp)) for cid, _, exp, _ in record.leases}
    assert seen <= {(cid, exp) for cid, exps in leases.items() for exp in exps}
    assert len({(cid, token) for cid, token, _, _ in record.leases}) == len(record.leases)
