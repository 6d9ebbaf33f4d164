"""A small command worker for Chronos: poll one system's queue, run handlers, acknowledge.

It polls ``GET /api/v1/commands/{system}``, runs the handler registered for each
command's name, sends a heartbeat (``/extend``) while a handler is busy so the
lease does not run out during long work, and reports ``/complete`` with the
handler's result or ``/fail`` with the error. Every callback carries the
command's ``lease_token``: if the lease was lost (the command went to another
poller) the server answers 409 and the result is dropped rather than
overwriting the other poller's work.

Run it against a server::

    export CHRONOS_URL=http://127.0.0.1:8000
    export CHRONOS_KEY=chr_k_...          # a key bound to the system, or with commands.manage
    python examples/clients/command_worker.py homeserver

Write your own handlers: ``async def handler(command: dict) -> JSON`` returns the
result; raise :class:`Retry` to try again later, any other exception to fail
for good (the server still retries nothing then). Only commands the server's
whitelist accepted ever reach a worker; a worker runs only the ones it has a
handler for and fails the others without retry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

log = logging.getLogger("command_worker")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class Retry(Exception):
    """Raise from a handler to have the command queued again (after ``after_seconds`` or the server's backoff)."""

    def __init__(self, message: str, after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.after_seconds = after_seconds


class LeaseLost(Exception):
    """The server no longer considers this worker the command's holder (HTTP 409)."""


class CommandWorker:
    """Polls one system and runs handlers; one instance per system."""

    def __init__(
        self,
        base_url: str,
        key: str,
        system: str,
        handlers: dict[str, Handler],
        *,
        lease_seconds: int = 60,
        batch: int = 5,
        idle_seconds: float = 2.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.system = system
        self.handlers = {name.upper(): fn for name, fn in handlers.items()}
        self.lease_seconds = lease_seconds
        self.batch = batch
        self.idle_seconds = idle_seconds
        self.client = client or httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        self.handled: list[tuple[int, str]] = []  # (command id, outcome), for reports and tests

    async def close(self) -> None:
        await self.client.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; sleeps ``idle_seconds`` when the queue is empty."""
        while not stop.is_set():
            try:
                done = await self.run_once()
            except httpx.HTTPError as exc:
                log.warning("poll failed: %s", exc)
                done = 0
            if not done:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.idle_seconds)

    async def run_once(self) -> int:
        """Lease one batch and handle it; returns how many commands were handled."""
        r = await self.client.get(
            f"/api/v1/commands/{self.system}", params={"limit": self.batch, "lease_seconds": self.lease_seconds}
        )
        r.raise_for_status()
        commands = r.json()["items"]
        await asyncio.gather(*(self.handle(c) for c in commands))
        return len(commands)

    async def handle(self, command: dict[str, Any]) -> None:
        handler = self.handlers.get(command["command"])
        if handler is None:
            await self._report(
                command, "fail", {"error": f"this worker has no handler for {command['command']}", "retry": False}
            )
            return
        heartbeat = asyncio.create_task(self._heartbeat(command))
        try:
            result = await handler(command)
        except Retry as exc:
            body: dict[str, Any] = {"error": str(exc) or "retry", "retry": True}
            if exc.after_seconds is not None:
                body["retry_after_seconds"] = exc.after_seconds
            outcome, payload = "fail", body
        except Exception as exc:  # noqa: BLE001 - a handler's failure is reported, not raised
            outcome, payload = "fail", {"error": f"{type(exc).__name__}: {exc}"[:4000], "retry": False}
        else:
            outcome, payload = "complete", {"result": result}
        finally:
            heartbeat.cancel()
        await self._report(command, outcome, payload)

    async def _heartbeat(self, command: dict[str, Any]) -> None:
        """Extend the lease at a third of its length while the handler runs."""
        interval = max(self.lease_seconds / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._post(command, "extend", {"lease_seconds": self.lease_seconds})
            except LeaseLost:
                log.warning("command %s: lease lost during work", command["id"])
                return
            except httpx.HTTPError as exc:
                log.warning("command %s: heartbeat failed: %s", command["id"], exc)

    async def _report(self, command: dict[str, Any], verb: str, body: dict[str, Any]) -> None:
        # Network errors are retried with backoff: complete and fail are idempotent,
        # so a repeat of a call the server already applied gets the same answer.
        for attempt in range(6):
            try:
                await self._post(command, verb, body)
                self.handled.append((command["id"], verb))
                return
            except LeaseLost:
                self.handled.append((command["id"], "lease-lost"))
                log.warning("command %s: %s refused, the lease went to another poller", command["id"], verb)
                return
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                if status is not None and status < 500:
                    log.error("command %s: %s rejected: %s", command["id"], verb, exc.response.text[:300])
                    self.handled.append((command["id"], f"{verb}-rejected"))
                    return
                await asyncio.sleep(min(30.0, 0.5 * 2**attempt) * (0.5 + random.random() / 2))
        log.error("command %s: giving up on %s; the lease will expire and the server retries it", command["id"], verb)

    async def _post(self, command: dict[str, Any], verb: str, body: dict[str, Any]) -> dict[str, Any]:
        r = await self.client.post(
            f"/api/v1/commands/{command['id']}/{verb}", json={**body, "lease_token": command["lease_token"]}
        )
        if r.status_code == 409:
            raise LeaseLost(r.json().get("detail", "conflict"))
        r.raise_for_status()
        return r.json()


# -- example handlers ------------------------------------------------------------------------


async def ping(command: dict[str, Any]) -> dict[str, Any]:
    return {"pong": command["params"], "args": command["args"]}


async def light(command: dict[str, Any]) -> dict[str, Any]:
    room, level = command["params"].get("room", "all"), command["params"].get("level", "on")
    log.info("light %s -> %s", room, level)
    return {"room": room, "level": level}


async def sleep(command: dict[str, Any]) -> dict[str, Any]:
    """Long work: the heartbeat keeps the lease alive meanwhile."""
    seconds = float(command["params"].get("seconds", "1"))
    await asyncio.sleep(min(seconds, 3600))
    return {"slept": seconds}


EXAMPLE_HANDLERS: dict[str, Handler] = {"PING": ping, "LIGHT": light, "SLEEP": sleep}


def main() -> None:
    parser = argparse.ArgumentParser(description="Poll one Chronos command system and run handlers.")
    parser.add_argument("system", help="the system id to poll, e.g. homeserver")
    parser.add_argument("--url", default=os.environ.get("CHRONOS_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--lease-seconds", type=int, default=60)
    parser.add_argument("--batch", type=int, default=5)
    args = parser.parse_args()
    key = os.environ.get("CHRONOS_KEY")
    if not key:
        parser.error("set CHRONOS_KEY to an API key bound to the system (or with commands.manage)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def run() -> None:
        worker = CommandWorker(
            args.url, key, args.system, EXAMPLE_HANDLERS, lease_seconds=args.lease_seconds, batch=args.batch
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await worker.run(stop)
        finally:
            await worker.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
