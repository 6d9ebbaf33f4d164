"""A local n8n for the channel's tests: a Webhook node's wire behaviour, the example workflows' Code nodes run
by Node.js, and a small runner for the command worker workflow's HTTP Request, Split Out and Code nodes."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from chronos.plugin import EventType, Outbox, OutboxMessage, hookimpl

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "n8n"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NODE = shutil.which("node")


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeN8n:
    """A production webhook URL ``/webhook/chronos``; ``active`` False answers like an inactive workflow."""

    base: str = ""
    active: bool = True
    header_auth: tuple[str, str] | None = None
    received: list[Received] = field(default_factory=list)
    replies: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.base}/webhook/chronos"

    def app(self) -> Starlette:
        async def webhook(request: Request) -> Response:
            path = request.path_params["path"]
            if not self.active or path != "chronos":
                message = f'The requested webhook "POST {path}" is not registered.'
                return JSONResponse({"code": 404, "message": message, "hint": "Activate the workflow"}, 404)
            if self.header_auth and request.headers.get(self.header_auth[0]) != self.header_auth[1]:
                return PlainTextResponse("Authorization data is wrong!", 403)
            self.received.append(Received(dict(request.headers), await request.body()))
            if self.replies:
                status, text, headers = self.replies.pop(0)
                return PlainTextResponse(text, status, headers=headers)
            return JSONResponse({"message": "Workflow was started"})

        return Starlette(routes=[Route("/webhook/{path:path}", webhook, methods=["POST"])])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def serving(fake: FakeN8n) -> AsyncIterator[FakeN8n]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(fake.app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    fake.base = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


# -- Code nodes, run by Node.js the way n8n runs them ("Run Once for All Items") ------------------------------

_HARNESS = """
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const $input = { all: () => input.items.map((item) => ({ json: item.json, binary: {} })) };
const $env = input.env;
const self = { helpers: { getBinaryDataBuffer: async (i) => Buffer.from(input.items[i].raw, 'base64') } };
(async function () { %s }).call(self).then(
  (out) => process.stdout.write(JSON.stringify({ ok: out })),
  (err) => process.stdout.write(JSON.stringify({ error: String(err && err.message) })),
);
"""


def run_code(js: str, items: list[dict[str, Any]], env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The Code node's output items; ``RuntimeError(message)`` when the code throws.

    ``items`` are ``{"json": ..., "raw": <base64 body>}`` (``raw`` stands in for the Webhook node's binary data).
    """
    assert NODE, "node is needed to run the workflows' Code nodes"
    done = subprocess.run(
        [NODE, "-e", _HARNESS % js],
        input=json.dumps({"items": items, "env": env or {}}),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    answer = json.loads(done.stdout)
    if "error" in answer:
        raise RuntimeError(answer["error"])
    return answer["ok"]


def workflow(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def node(flow: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [n for n in flow["nodes"] if n["name"] == name]
    return found


# -- the command worker workflow, run against the API ------------------------------------------------------

_SEGMENT = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_PATH = re.compile(r"^(\$env|\$json|\$\('([^']+)'\)\.item\.json)((?:\.[A-Za-z_][A-Za-z0-9_]*)*)$")


@dataclass
class Scope:
    env: dict[str, str]
    item: dict[str, Any]
    index: int
    outputs: dict[str, list[dict[str, Any]]]


def _value(expr: str, scope: Scope) -> Any:
    stringify = expr.startswith("JSON.stringify(") and expr.endswith(")")
    inner = expr[len("JSON.stringify(") : -1] if stringify else expr
    match = _PATH.match(inner)
    if match is None:
        raise ValueError(f"the runner does not know the expression {expr!r}")
    if match.group(1) == "$env":
        current: Any = scope.env
    elif match.group(1) == "$json":
        current = scope.item
    else:
        current = scope.outputs[match.group(2)][scope.index]
    for part in filter(None, match.group(3).split(".")):
        current = current[part]
    return json.dumps(current) if stringify else current


def evaluate(value: str, scope: Scope) -> str:
    """An n8n parameter: ``=`` starts an expression template whose ``{{ }}`` parts are evaluated."""
    if not value.startswith("="):
        return value
    return _SEGMENT.sub(lambda m: str(_value(m.group(1), scope)), value[1:])


async def run_worker_flow(flow: dict[str, Any], client: Any, env: dict[str, str], api_key: str) -> dict[str, Any]:
    """One execution of the command worker workflow from its trigger: each node's output items, by name.

    ``client`` is an httpx client for the API (its base URL is ``env["CHRONOS_URL"]``); the
    "Chronos API key" credential sends ``Authorization: Bearer <api_key>``.
    """
    outputs: dict[str, list[dict[str, Any]]] = {}
    trigger = next(n for n in flow["nodes"] if n["type"].endswith("scheduleTrigger"))
    queue: list[tuple[str, list[dict[str, Any]]]] = [(trigger["name"], [{}])]
    while queue:
        name, items = queue.pop(0)
        spec = node(flow, name)
        kind = spec["type"].rsplit(".", 1)[-1]
        params = spec["parameters"]
        ports: list[list[dict[str, Any]]] = [[]]
        if kind == "scheduleTrigger":
            ports = [[{}]]
        elif kind == "splitOut":
            ports = [[part for item in items for part in item[params["fieldToSplitOut"]]]]
        elif kind == "code":
            try:
                ports = [[o["json"] for o in run_code(params["jsCode"], [{"json": i} for i in items])], []]
            except RuntimeError:
                assert spec.get("onError") == "continueErrorOutput"
                ports = [[], items]
        elif kind == "httpRequest":
            ports = [[]]
            for index, item in enumerate(items):
                scope = Scope(env, item, index, outputs)
                url = evaluate(params["url"], scope)
                query = {
                    p["name"]: evaluate(p["value"], scope)
                    for p in params.get("queryParameters", {}).get("parameters", [])
                }
                body = json.loads(evaluate(params["jsonBody"], scope)) if params.get("sendBody") else None
                headers = (
                    {"Authorization": f"Bearer {api_key}"} if "httpHeaderAuth" in spec.get("credentials", {}) else {}
                )
                r = await client.request(params["method"], url, params=query or None, json=body, headers=headers)
                assert r.status_code == 200, (name, r.status_code, r.text)
                ports[0].append(r.json())
        else:
            raise AssertionError(f"the runner does not know {spec['type']}")
        outputs[name] = [item for port in ports for item in port]
        for port, targets in enumerate(flow["connections"].get(name, {}).get("main", [])):
            for target in targets:
                if port < len(ports) and ports[port]:
                    queue.append((target["node"], ports[port]))
    return outputs


# -- publishing through the outbox ----------------------------------------------------------------------------


class Reading(BaseModel):
    title: str
    value: float = 0


class Sensors:
    """A test plugin that declares ``sensor.reading``."""

    @hookimpl
    def register_schemas(self):
        return [EventType("sensor.reading", Reading, "A sensor reported")]


def message(payload: dict[str, Any], event_type: str = "sensor.reading") -> OutboxMessage:
    created = datetime(2026, 12, 7, 8, 30, tzinfo=UTC)
    return OutboxMessage(id=1, event_type=event_type, payload=payload, created_at=created, webhook_id="msg_2Y8aXv")


async def publish(app: Any, payload: dict[str, Any], event_type: str = "sensor.reading") -> None:
    ctx = app.state.chronos
    async with ctx.db.write() as session:
        await ctx.service(Outbox).enqueue(session, event_type, payload)


async def dispatch(app: Any) -> None:
    jobs = app.state.chronos.jobs
    running = jobs.running.get("webhooks.dispatch")
    if running is not None and not running.done():
        await running
    await jobs.run_now("webhooks.dispatch")
