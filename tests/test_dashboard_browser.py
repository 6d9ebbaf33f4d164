"""The dashboard in a real browser: Chromium driven by Playwright against a live server this module starts.

One server and one browser for the module; each test opens its own context (its own sessionStorage).
Screenshots of every panel go to ``$CHRONOS_TEST_ARTIFACTS/dashboard`` (or pytest's tmp dir).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml
from playwright.sync_api import TimeoutError as PlaywrightTimeout, expect

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
AXE = ROOT / "web" / "tests" / "vendor" / "axe-core" / "axe.min.js"
ADMIN = "dashboard-admin-key-0123456789abcdef"
PANELS = [
    "events",
    "commands",
    "templates",
    "mail",
    "sync",
    "planning",
    "outbox",
    "backups",
    "keys",
    "audit",
    "plugins",
]
#: Text that must stay text: markup, an attribute breakout, right-to-left script and emoji.
HOSTILE = '<script>window.__pwned=1</script>"><img src=x onerror="window.__pwned=2"> مرحبا بالعالم 🎉'

pytestmark = pytest.mark.backends("sqlite")


def ensure_chromium() -> str:
    """Debian's chromium; installed with apt when missing (CI images start without it)."""
    if not Path(CHROMIUM).exists() and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-q"], check=False, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=False, timeout=600)
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    return CHROMIUM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    base = os.environ.get("CHRONOS_TEST_ARTIFACTS")
    out = Path(base) / "dashboard" if base else tmp_path_factory.mktemp("dashboard")
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextlib.contextmanager
def serving(tmp: Path, config: dict[str, Any], port: int) -> Iterator[str]:
    """``chronos serve`` with ``config`` on ``port`` until the block ends (stopped by its PID)."""
    (tmp / "chronos.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHRONOS")}
    env["CHRONOS_ADMIN_KEY"] = ADMIN
    chronos = str(Path(sys.executable).parent / "chronos")
    with open(tmp / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [chronos, "--config", str(tmp / "chronos.yaml"), "serve", "--port", str(port)],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200, 90, "the server")
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver that answers 500 until ``accept`` is set, then 204; it keeps what it accepted."""

    accept = False
    received: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if type(self).accept:
            type(self).received.append(body)
        self.send_response(204 if type(self).accept else 500)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The demo calendar, commands, templates, mail (to a real SMTP server), webhooks and the dashboard."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    tmp = tmp_path_factory.mktemp("dashboard-server")
    mails: list[Any] = []

    class Mailbox(Message):
        def handle_message(self, message: Any) -> None:
            mails.append(message)

    smtp = Controller(Mailbox(), hostname="127.0.0.1", port=free_port())
    smtp.start()
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    config = {
        "database": {"url": f"sqlite+aiosqlite:///{tmp / 'chronos.db'}"},
        "logging": {"level": "warning"},
        "plugins": {
            "enabled": [
                *("events", "ics", "normalize", "commands", "templates", "mail", "web"),
                *("hello", "planning", "webhooks", "backups"),
            ]
        },
        "ics": {
            "calendars": [
                {
                    "id": "demo",
                    "path": str(ROOT / "examples" / "calendars" / "demo.ics"),
                    "interval_seconds": 3600,
                    "past_days": 30,
                    "horizon_days": 90,
                    "demo_week": "2026-01-12",
                }
            ]
        },
        "commands": {"whitelist": [{"system": "web-1", "action": "DEPLOY", "params": {"version": "[0-9.]{1,20}"}}]},
        "mail": {
            "from": "Chronos <chronos@example.com>",
            "smtp": {"host": "127.0.0.1", "port": smtp.port, "starttls": False},
        },
        # One attempt, then a dead letter: the replay test needs one without waiting out a retry schedule.
        "webhooks": {"retry_schedule_seconds": []},
        # The webhook receivers: this machine only (nothing leaves it).
        "network": {"allow": ["127.0.0.1/32"]},
    }
    try:
        with serving(tmp, config, free_port()) as base:
            api = httpx.Client(base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
            wait_for(lambda: any(c["event_count"] for c in api.get("/calendars").json()["items"]), 120, "the demo sync")
            yield {
                "base": base,
                "api": api,
                "log": tmp / "server.log",
                "mails": mails,
                "receiver": f"http://127.0.0.1:{receiver.server_address[1]}/hook",
            }
            api.close()
    finally:
        receiver.shutdown()
        smtp.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=ensure_chromium(), headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id="Europe/Berlin")
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    pg.errors = errors
    yield pg
    context.close()


def sign_in(pg, server, key: str = ADMIN) -> None:
    pg.goto(server["base"] + "/")
    pg.fill("#signin-key", key)
    pg.click("#signin-form button[type=submit]")
    pg.wait_for_selector("#shell:not([hidden])")
    pg.wait_for_selector("#nav:not([aria-busy])", state="attached")  # every panel's probe has answered


def open_panel(pg, panel: str) -> None:
    pg.click(f'#nav-list a[data-panel="{panel}"]')
    pg.wait_for_selector(f'section[data-panel="{panel}"]')


# -- the walk-through ---------------------------------------------------------------------------------


def test_sign_in_filter_toggle_a_checklist_item_and_sign_out(page, server):
    pg = page
    pg.goto(server["base"] + "/")
    assert pg.url.endswith("/ui/")
    sign_in(pg, server)
    assert pg.evaluate("sessionStorage.getItem('chronos.key')") == ADMIN
    assert ADMIN not in pg.content() and ADMIN not in pg.url
    assert pg.context.cookies() == []
    pg.wait_for_selector(".ev")
    assert pg.locator(".ev", has_text="Sprint planning").count() == 1

    pg.fill('input[name="tags"]', "planning")
    expect(pg.locator(".ev", has_text="Daily standup")).to_have_count(0)
    expect(pg.locator(".ev", has_text="Sprint planning")).to_have_count(1)

    pg.click(".ev >> text=Sprint planning")
    box = pg.get_by_label("estimate the migration stories")
    assert not box.is_checked()
    box.check()
    expect(pg.locator(".ev", has_text="Sprint planning")).to_contain_text("2/3")
    event_id = int(pg.get_attribute(".ev >> text=Sprint planning", "data-event-id"))
    stored = server["api"].get(f"/events/{event_id}").json()
    assert any(s["text"] == "estimate the migration stories" and s["done"] for s in stored["sub_tasks"]), stored

    pg.click("#signout")
    pg.wait_for_selector("#signin:not([hidden])")
    assert pg.evaluate("sessionStorage.getItem('chronos.key')") is None
    assert pg.errors == []


def test_retry_a_dead_command_and_resolve_one_by_hand(page, server):
    api = server["api"]
    dead = api.post(
        "/commands",
        json={"target_system": "web-1", "command": "DEPLOY", "params": {"version": "9.9"}, "max_attempts": 1},
    ).json()
    (lease,) = [c for c in api.get("/commands/web-1", params={"limit": 10}).json()["items"] if c["id"] == dead["id"]]
    api.post(
        f"/commands/{dead['id']}/fail", json={"lease_token": lease["lease_token"], "error": "disk full", "retry": True}
    )
    assert api.get("/commands", params={"status": "dead"}).json()["items"][0]["id"] == dead["id"]
    pending = api.post(
        "/commands", json={"target_system": "web-1", "command": "DEPLOY", "params": {"version": "1.0"}}
    ).json()

    pg = page
    sign_in(pg, server)
    open_panel(pg, "commands")
    pg.click('[data-tab="dead"]')
    pg.click(f'button[aria-label="Retry command {dead["id"]}"]')
    pg.wait_for_selector(f"text=Command {dead['id']} is now pending.")
    assert api.get("/commands", params={"status": "pending"}).json()["items"][0]["status"] == "pending"
    assert {c["id"] for c in api.get("/commands", params={"status": "dead"}).json()["items"]} == set()

    pg.click('[data-tab="queue"]')
    pg.click(f'button[aria-label="Complete or fail command {pending["id"]} by hand"]')
    pg.get_by_label("Result or error").fill('{"deployed": true}')
    pg.click("text=Apply")
    pg.wait_for_selector(f"text=Command {pending['id']} is now completed.")
    audit = api.get("/audit", params={"entity": "command", "entity_id": str(pending["id"])}).json()["items"]
    assert [a["action"] for a in audit if a["action"].startswith("manual")] == ["manual_complete"]
    assert pg.errors == []


def test_whitelist_editor_adds_an_entry_and_edits_every_field_with_errors_at_the_field(page, server):
    pg = page
    sign_in(pg, server)
    open_panel(pg, "commands")
    pg.click('[data-tab="whitelist"]')
    add = pg.locator('form[aria-label="Add an entry"]')
    add.get_by_label("System").fill("cache-2")
    add.get_by_label("Action").fill("restart")
    add.get_by_label("Parameter rules (JSON)").fill('{"reason": null}')
    add.locator("button[type=submit]").click()
    pg.click('button[aria-label="Edit cache-2 RESTART"]')
    form = pg.locator('form[aria-label="Edit cache-2 RESTART"]')
    form.get_by_label("Parameter rules (JSON)").fill('{"reason": {"regex": "[a-z ]{1,40}"}}')
    form.get_by_label("Schedule").select_option("event_start")
    attempts = form.get_by_label("Max attempts")
    attempts.fill("0")  # out of range: the server's 422 lands under this field
    form.get_by_label("Grace (seconds)").fill("600")
    form.get_by_label("Description").fill("restart the cache after a deploy")
    form.get_by_label("Calendars (comma separated)").fill("ops, demo")
    form.locator("button[type=submit]").click()
    expect(attempts).to_have_attribute("aria-invalid", "true")
    note = pg.locator("#" + attempts.get_attribute("aria-describedby"))
    expect(note).to_contain_text("greater than or equal to 1")
    attempts.fill("3")
    grace = form.get_by_label("Grace (seconds)")
    grace.fill("")
    grace.press_sequentially("1e")  # not a number: refused at the field, before any request
    form.locator("button[type=submit]").click()
    expect(grace).to_have_attribute("aria-invalid", "true")
    expect(form.locator(".field-error")).to_have_text("not a number")
    assert server["api"].get("/whitelists", params={"system": "cache-2"}).json()["items"][0]["grace_seconds"] is None
    grace.fill("600")
    form.locator("button[type=submit]").click()
    expect(pg.locator("text=cache-2 RESTART saved.")).to_be_visible()
    expect(pg.locator("td", has_text='"regex":"[a-z ]{1,40}"')).to_be_visible()
    (entry,) = server["api"].get("/whitelists", params={"system": "cache-2"}).json()["items"]
    assert entry["allowed_params_json"] == {"reason": {"regex": "[a-z ]{1,40}"}}
    assert (entry["schedule"], entry["max_attempts"], entry["grace_seconds"]) == ("event_start", 3, 600)
    assert entry["description"] == "restart the cache after a deploy" and entry["calendars"] == ["ops", "demo"]
    assert pg.errors == []


def test_workflow_editor_edits_a_rule_with_errors_at_the_field(page, server):
    api = server["api"]
    api.post("/whitelists", json={"system": "web-2", "action": "DEPLOY", "allowed_params_json": {"version": None}})
    wf = api.post(
        "/workflows",
        json={
            "name": "deploy the mirror",
            "trigger_command": "DEPLOY",
            "trigger_target": "web-1",
            "on": "completed",
            "action_command": "DEPLOY",
            "action_target": "web-1",
            "params_template_json": {"version": "{{ params.version }}"},
        },
    ).json()
    assert "id" in wf, wf
    pg = page
    sign_in(pg, server)
    open_panel(pg, "commands")
    pg.click('[data-tab="workflows"]')
    pg.click('button[aria-label="Edit workflow deploy the mirror"]')
    form = pg.locator('form[aria-label="Edit workflow deploy the mirror"]')
    target = form.get_by_label("for system")
    target.fill("not a system!")
    form.get_by_label("has").select_option("failed")
    form.get_by_label("Delay (seconds)").fill("30")
    form.locator("button[type=submit]").click()
    expect(target).to_have_attribute("aria-invalid", "true")
    expect(pg.locator("#" + target.get_attribute("aria-describedby"))).to_contain_text("pattern")
    assert api.get(f"/workflows/{wf['id']}").json()["action_target"] == "web-1"  # nothing saved
    target.fill("web-2")
    params = form.get_by_label("Parameters (JSON template)")
    params.fill("{not json")
    form.locator("button[type=submit]").click()
    expect(form.locator(".field-error")).to_contain_text("not valid JSON")
    expect(params).to_have_attribute("aria-invalid", "true")
    params.fill('{"version": "{{ params.version }}.1"}')
    form.locator("button[type=submit]").click()
    expect(pg.locator("text=Workflow deploy the mirror saved.")).to_be_visible()
    expect(pg.locator("td", has_text="DEPLOY@web-2 after 30 s")).to_be_visible()
    saved = api.get(f"/workflows/{wf['id']}").json()
    assert (saved["action_target"], saved["on"], saved["delay_seconds"]) == ("web-2", "failed", 30)
    assert saved["params_template_json"] == {"version": "{{ params.version }}.1"}
    assert pg.errors == []


def test_edit_and_preview_a_template_with_its_error_at_its_line(page, server):
    api = server["api"]
    t = api.post(
        "/templates",
        json={
            "name": "browser-welcome",
            "type": "email",
            "variables_json": {"type": "object", "properties": {"name": {"type": "string"}}},
            "content": {"subject": "Hi {{ name }}", "html": "<h1>Hello {{ name }}</h1>"},
        },
    ).json()
    pg = page
    sign_in(pg, server)
    open_panel(pg, "templates")
    pg.click("button.ev >> text=browser-welcome")
    pg.wait_for_selector('button[aria-label="Insert name"]')
    source = pg.get_by_label("Template source")
    source.fill("<h1>Hello {{ name }}</h1>\n<p>Line two {{ name }</p>")
    pg.click("text=Save and preview")
    pg.wait_for_selector(".editor .gutter .bad")
    assert pg.inner_text(".editor .gutter .bad").strip() == "2"
    assert "Line 2" in pg.inner_text('[role="alert"] .error')

    source.fill("<h1>Hello {{ name }}</h1>\n<p>Welcome aboard.</p>")
    pg.get_by_label("Sample variables (JSON)").fill('{"name": "Ada"}')
    pg.click("text=Save and preview")
    frame = pg.frame_locator("iframe.preview")
    frame.locator("text=Hello Ada").wait_for()
    assert pg.get_attribute("iframe.preview", "sandbox") == ""
    assert api.get(f"/templates/{t['id']}").json()["content"]["html"].endswith("Welcome aboard.</p>")
    assert pg.errors == []


def test_template_test_send_reaches_a_real_smtp_server(page, server):
    api = server["api"]
    api.post(
        "/templates",
        json={
            "name": "browser-send",
            "type": "email",
            "variables_json": {"type": "object", "properties": {"name": {"type": "string"}}},
            "content": {"subject": "Test for {{ name }}", "html": "<p>Hi {{ name }}</p>"},
        },
    )
    pg = page
    sign_in(pg, server)
    open_panel(pg, "templates")
    pg.click("button.ev >> text=browser-send")
    pg.get_by_label("Sample variables (JSON)").fill('{"name": "Ada"}')
    pg.get_by_label("Test send to").fill("ada@example.com")
    pg.click("text=Send test")
    expect(pg.locator("text=Test mail queued")).to_be_visible()
    wait_for(lambda: any(m["To"] == "ada@example.com" for m in server["mails"]), 30, "the test mail")
    (mail,) = [m for m in server["mails"] if m["To"] == "ada@example.com"]
    assert mail["Subject"] == "Test for Ada"

    def sent() -> httpx.Response:
        return api.get("/mail/deliveries", params={"status": "sent", "limit": 100})

    wait_for(lambda: "ada@example.com" in str(sent().json()), 30, "the delivery's sent status")
    open_panel(pg, "mail")  # the delivery as the mail panel shows it: sent, with the server's answer
    pg.get_by_label("Status").select_option("sent")
    row = pg.locator('section[data-panel="mail"] tr', has_text="ada@example.com")
    expect(row).to_contain_text("Test for Ada")
    expect(row.locator('td[data-label="Last SMTP answer"]')).to_contain_text("250")
    assert pg.errors == []


def test_templates_export_and_import_through_the_browser(page, server, tmp_path):
    api = server["api"]
    made = api.post(
        "/templates", json={"name": "browser-export", "type": "email", "content": {"subject": "s", "html": "<p>x</p>"}}
    ).json()
    pg = page
    sign_in(pg, server)
    open_panel(pg, "templates")
    with pg.expect_download() as download:
        pg.click("text=Export all")
    exported = tmp_path / download.value.suggested_filename
    download.value.save_as(exported)
    assert exported.name == "chronos-templates.json"
    assert "browser-export" in exported.read_text(encoding="utf-8")
    assert api.delete(f"/templates/{made['id']}").status_code == 204
    pg.get_by_label("Import (JSON export)").set_input_files(str(exported))
    expect(pg.locator("text=Imported")).to_be_visible()
    expect(pg.locator("button.ev", has_text="browser-export")).to_be_visible()
    names = {t["name"] for t in api.get("/templates", params={"limit": 200}).json()["items"]}
    assert "browser-export" in names
    assert pg.errors == []


def test_audit_filters_narrow_the_log(page, server):
    api = server["api"]
    key = api.post("/keys", json={"name": "audited", "scopes": ["events.read"]}).json()
    api.delete(f"/keys/{key['id']}")
    expected = api.get("/audit", params={"entity": "api_key", "action": "revoke", "limit": 50}).json()["items"]
    pg = page
    sign_in(pg, server)
    open_panel(pg, "audit")
    pg.get_by_label("Entity").fill("api_key")
    pg.get_by_label("Action").fill("revoke")
    pg.click("button[type=submit] >> text=Filter")
    rows = pg.locator('section[data-panel="audit"] tbody tr')
    expect(rows).to_have_count(len(expected))
    assert set(pg.locator('section[data-panel="audit"] td[data-label="Action"]').all_inner_texts()) == {"revoke"}
    expect(pg.locator("td", has_text=f"api_key {key['id']}")).to_be_visible()
    pg.get_by_label("Action").fill("no-such-action")
    pg.click("button[type=submit] >> text=Filter")
    expect(pg.locator("text=No audit entries match")).to_be_visible()
    assert pg.errors == []


def test_a_dead_webhook_delivery_is_replayed_and_delivered(page, server):
    api = server["api"]
    hook = api.post("/webhooks", json={"url": server["receiver"], "event_types": ["outbox.test"]}).json()
    Receiver.accept = False
    api.post(f"/webhooks/{hook['id']}/test")

    def dead() -> list[dict[str, Any]]:
        return [d for d in api.get("/outbox/dead", params={"limit": 100}).json()["items"]]

    wait_for(lambda: any(d["event_type"] == "outbox.test" for d in dead()), 30, "a dead letter")
    (letter,) = [d for d in dead() if d["event_type"] == "outbox.test"]
    Receiver.accept = True
    pg = page
    sign_in(pg, server)
    open_panel(pg, "outbox")
    pg.click('[data-tab="dead"]')
    pg.click(f'button[aria-label="Replay delivery {letter["id"]}"]')
    expect(pg.locator(f"text=Delivery {letter['id']} queued again.")).to_be_visible()
    wait_for(lambda: bool(Receiver.received), 30, "the replayed delivery")
    pg.click('[data-tab="deliveries"]')
    pg.get_by_label("Status").select_option("delivered")
    expect(pg.locator("td", has_text="outbox.test").first).to_be_visible()
    assert letter["id"] not in {d["id"] for d in dead()}
    assert pg.errors == []


def test_sync_now_shows_a_run(page, server):
    pg = page
    sign_in(pg, server)
    open_panel(pg, "sync")
    pg.wait_for_selector("text=demo (ics)")
    before = len(server["api"].get("/sync/runs", params={"limit": 500}).json()["items"])
    pg.click('button[aria-label="Sync demo now"]')
    pg.wait_for_selector("text=Sync of demo started")
    wait_for(lambda: len(server["api"].get("/sync/runs", params={"limit": 500}).json()["items"]) > before, 20, "a run")
    expect(pg.locator("td", has_text="api").first).to_be_visible()
    assert pg.errors == []


def test_conflict_hints_and_moving_an_event_to_a_proposed_slot(page, server):
    api = server["api"]
    start = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(time.time() + 2 * 3600))
    end = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(time.time() + 3 * 3600))
    planned = api.post("/events", json={"title": "Plan me", "start": start, "end": end, "mode": "auto-plan"}).json()
    api.post("/events", json={"title": "Fixed meeting", "start": start, "end": end})
    pg = page
    sign_in(pg, server)
    chip = pg.locator(f'.ev[data-event-id="{planned["id"]}"]')
    expect(chip).to_contain_text("conflict")
    chip.click()
    expect(pg.locator(".details [role=note]")).to_contain_text("Fixed meeting")
    pg.click("text=Propose free slots")
    pg.locator(".details >> text=Move here").first.click()
    expect(chip).not_to_contain_text("conflict")
    moved = api.get(f"/events/{planned['id']}").json()
    assert moved["start_utc"] != planned["start_utc"]
    assert pg.errors == []


def test_backups_and_webhooks_panels(page, server):
    pg = page
    sign_in(pg, server)
    open_panel(pg, "backups")
    pg.click("text=Back up now")
    expect(pg.locator('section[data-panel="backups"] td', has_text="complete").first).to_be_visible(timeout=60_000)
    (backup,) = server["api"].get("/backups").json()["items"]
    pg.click(f'button[aria-label="Verify {backup["id"]}"]')
    expect(pg.locator(f"text={backup['id']} verified.")).to_be_visible(timeout=60_000)
    expect(pg.locator('section[data-panel="backups"] td[data-label="Verified"]', has_text="yes")).to_be_visible()
    open_panel(pg, "outbox")
    pg.get_by_label("URL").fill("http://10.9.8.7/hooks")  # a private address: refused, with the problem's detail
    pg.click("button[type=submit] >> text=Add")
    expect(pg.locator('section[data-panel="outbox"] .error')).to_contain_text("not allowed")
    pg.get_by_label("URL").fill("http://127.0.0.1:9/hooks/chronos")
    pg.click("button[type=submit] >> text=Add")
    expect(pg.locator(".secret")).not_to_be_empty()
    expect(pg.locator("td", has_text="http://127.0.0.1:9/hooks/chronos")).to_be_visible()
    hooks = server["api"].get("/webhooks").json()["items"]
    assert [h["url"] for h in hooks].count("http://127.0.0.1:9/hooks/chronos") == 1
    assert pg.errors == []


def test_create_and_edit_a_local_event_and_create_a_key(page, server):
    pg = page
    sign_in(pg, server)
    pg.wait_for_selector(".ev")
    pg.click("text=New event")
    pg.get_by_label("Title").fill("Dentist #health")
    pg.click("button[type=submit] >> text=Create")
    expect(pg.locator(".details h3")).to_have_text("Dentist #health")
    (created,) = server["api"].get("/events", params={"text": "Dentist", "limit": 5}).json()["items"]
    assert created["calendar_id"] == "local" and created["tags"] == ["health"]
    pg.click(".details >> text=Edit")
    pg.get_by_label("Location").fill("Main street 1")
    pg.click("button[type=submit] >> text=Save")
    expect(pg.locator(".details dd", has_text="Main street 1")).to_be_visible()
    assert server["api"].get(f"/events/{created['id']}").json()["location"] == "Main street 1"

    open_panel(pg, "keys")
    pg.get_by_label("Name").fill("worker")
    pg.get_by_label("commands.manage").check()
    pg.click("button[type=submit] >> text=Create key")
    secret = pg.inner_text(".secret")
    assert secret.startswith("chr_")
    expect(pg.locator("td", has_text="worker")).to_be_visible()
    assert (
        httpx.get(f"{server['base']}/api/v1/commands", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    )
    assert pg.errors == []


def test_a_plugin_contributes_its_own_panel(page, server):
    """The plugin template's panel.js (a WebAssets record) shows up in the navigation and works."""
    pg = page
    sign_in(pg, server)
    open_panel(pg, "plugin-hello")
    assert pg.inner_text("#h-plugin-hello") == "Greetings"
    pg.get_by_label("Who to greet").fill("Ada")
    pg.click("button[type=submit] >> text=Greet")
    expect(pg.locator('section[data-panel="plugin-hello"] .ok')).to_have_text("Hello, Ada! (greeted 1×)")
    expect(pg.locator('section[data-panel="plugin-hello"] td', has_text="Ada").first).to_be_visible()
    assert pg.errors == []


def test_keyboard_only_sign_in_navigation_and_visible_focus(page, server):
    pg = page
    pg.goto(server["base"] + "/ui/")
    pg.wait_for_selector("#signin:not([hidden])")
    assert pg.evaluate("document.activeElement.id") == "signin-key"  # the form takes the focus
    pg.keyboard.type(ADMIN)
    pg.keyboard.press("Enter")
    pg.wait_for_selector("#nav:not([aria-busy])", state="attached")
    pg.wait_for_selector('section[data-panel="events"]')

    def tab_to(text: str) -> None:
        for _ in range(60):
            pg.keyboard.press("Tab")
            if pg.evaluate("document.activeElement.textContent.trim()") == text:
                # :focus-visible draws the focus ring for a keyboard user
                assert pg.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
                return
        raise AssertionError(f"Tab never reached {text!r}")

    pg.reload()  # still signed in (sessionStorage); the focus starts at the top of the page
    pg.wait_for_selector('#shell:not([hidden]) section[data-panel="events"]')
    pg.wait_for_selector("#nav:not([aria-busy])", state="attached")
    pg.keyboard.press("Tab")
    assert pg.evaluate("document.activeElement.className") == "skip"
    pg.keyboard.press("Enter")
    assert pg.evaluate("document.activeElement.id") == "main" and pg.url.endswith("/ui/")  # focus moved, route kept
    pg.evaluate("document.activeElement.blur()")
    tab_to("Commands")
    pg.keyboard.press("Enter")
    pg.wait_for_selector('section[data-panel="commands"]')
    tab_to("Workflows")
    pg.keyboard.press("Enter")
    expect(pg.locator('[data-tab="workflows"]')).to_have_attribute("aria-pressed", "true")
    tab_to("Sign out")
    pg.keyboard.press("Enter")
    pg.wait_for_selector("#signin:not([hidden])")
    assert pg.errors == []


def test_times_show_in_the_browsers_time_zone(browser, server):
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)  # overlaps now: on this week's view
    end = start + timedelta(hours=2)
    made = (
        server["api"]
        .post("/events", json={"title": "Zone check", "start": start.isoformat(), "end": end.isoformat()})
        .json()
    )
    for zone in ("America/New_York", "Asia/Kolkata"):
        context = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id=zone, locale="en-GB")
        pg = context.new_page()
        pg.set_default_timeout(20_000)
        sign_in(pg, server)
        local = start.astimezone(ZoneInfo(zone)).strftime("%H:%M")
        chip = pg.locator(f'.ev[data-event-id="{made["id"]}"]').first
        expect(chip.locator(".t")).to_contain_text(local)
        context.close()


# -- bad input, keys and the server going away -----------------------------------------------------------


def test_hostile_titles_and_template_bodies_render_as_text(page, server):
    api = server["api"]
    start = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(time.time() + 3600))
    api.post("/events", json={"title": HOSTILE, "description": HOSTILE, "start": start, "calendar_id": "local"})
    api.post(
        "/templates",
        json={
            "name": "hostile",
            "type": "email",
            "content": {"subject": "x", "html": HOSTILE.replace("<script>", "<script>parent.")},
        },
    )
    pg = page
    sign_in(pg, server)
    chip = pg.locator(".ev", has_text="مرحبا")
    chip.wait_for()
    assert "<script>window.__pwned=1</script>" in chip.inner_text() and "🎉" in chip.inner_text()
    chip.click()
    pg.wait_for_selector(".details h3")
    assert pg.inner_text(".details h3") == HOSTILE
    assert pg.locator("img[src='x']").count() == 0
    open_panel(pg, "templates")
    pg.click("button.ev >> text=hostile")
    pg.wait_for_selector("iframe.preview")
    pg.wait_for_timeout(300)
    assert pg.evaluate("window.__pwned") is None
    assert pg.errors == []


def test_panels_follow_the_keys_scopes_and_a_revoked_key_returns_to_sign_in(page, server):
    api = server["api"]
    created = api.post("/keys", json={"name": "reader", "scopes": ["events.read"]}).json()
    pg = page
    pg.goto(server["base"] + "/ui/")
    pg.fill("#signin-key", "chr_not_a_key")
    pg.click("#signin-form button[type=submit]")
    expect(pg.locator("#signin-error")).to_contain_text("This key was refused")
    assert pg.is_hidden("#shell") and pg.evaluate("sessionStorage.getItem('chronos.key')") is None
    sign_in(pg, server, created["secret"])
    shown = pg.eval_on_selector_all("#nav-list a", "links => links.map(a => a.dataset.panel)")
    assert "events" in shown and not {"commands", "keys", "audit", "plugins"} & set(shown)
    assert api.delete(f"/keys/{created['id']}").status_code in (200, 204)
    time.sleep(1.2)  # auth.key_cache_seconds of another process (1 s)
    pg.click("text=Today")
    pg.wait_for_selector("#signin:not([hidden])")
    assert "no longer accepted" in pg.inner_text("#signin-error")
    assert pg.evaluate("sessionStorage.getItem('chronos.key')") is None


def test_a_command_operator_sees_the_queue_but_not_the_admin_editors(page, server):
    operator = server["api"].post("/keys", json={"name": "operator", "scopes": ["commands.manage"]}).json()
    pg = page
    sign_in(pg, server, operator["secret"])
    open_panel(pg, "commands")
    expect(pg.locator('[data-tab="whitelist"]')).to_be_hidden()
    expect(pg.locator('[data-tab="workflows"]')).to_be_hidden()
    expect(pg.locator('[data-tab="dead"]')).to_be_visible()
    assert pg.errors == []


def test_a_stopped_server_shows_the_retrying_banner_until_it_is_back(browser, tmp_path):
    """A server of its own, really stopped (by its PID) and started again on the same port and database."""
    config = {
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'chronos.db'}"},
        "logging": {"level": "warning"},
        "plugins": {"enabled": ["events", "web"]},
    }
    port = free_port()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        with serving(tmp_path, config, port) as base:
            start, end = (
                time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(time.time() + h * 3600)) for h in (0, 1)
            )  # this week
            made = httpx.post(
                f"{base}/api/v1/events",
                json={"title": "Still here", "start": start, "end": end},
                headers={"Authorization": f"Bearer {ADMIN}"},
                timeout=30,
            )
            assert made.status_code == 201, made.text
            sign_in(pg, {"base": base})
            pg.wait_for_selector(".ev >> text=Still here")
        # Stopped: the next request fails, the banner shows and the page stays.
        pg.click("text=Next ›")
        pg.wait_for_selector("#banner:not([hidden])")
        assert "retrying" in pg.inner_text("#banner")
        assert pg.is_visible("#shell") and pg.is_visible('section[data-panel="events"]')
        with serving(tmp_path, config, port):
            pg.wait_for_selector("#banner", state="hidden", timeout=30_000)
            # Back online, the panel is drawn again (this week), from the restarted server.
            pg.wait_for_selector(".ev >> text=Still here")
            assert pg.is_visible("#shell")
        assert errors == []
    finally:
        context.close()


def test_a_plugin_panel_shows_for_a_non_admin_key_with_its_scope_only(page, server):
    api = server["api"]
    reader = api.post("/keys", json={"name": "greeting-reader", "scopes": ["events.read", "hello.read"]}).json()
    plain = api.post("/keys", json={"name": "events-only", "scopes": ["events.read"]}).json()
    api.post("/hello", json={"name": "Grace"})
    pg = page
    sign_in(pg, server, plain["secret"])
    shown = pg.eval_on_selector_all("#nav-list a", "links => links.map(a => a.dataset.panel)")
    assert "plugin-hello" not in shown and "plugins" not in shown
    pg.click("#signout")
    sign_in(pg, server, reader["secret"])
    shown = pg.eval_on_selector_all("#nav-list a", "links => links.map(a => a.dataset.panel)")
    assert "plugin-hello" in shown and "plugins" not in shown
    open_panel(pg, "plugin-hello")
    expect(pg.locator('section[data-panel="plugin-hello"] td', has_text="Grace").first).to_be_visible()
    pg.get_by_label("Who to greet").fill("Ada")
    pg.click("button[type=submit] >> text=Greet")  # hello.write is missing: the problem's detail shows
    expect(pg.locator('section[data-panel="plugin-hello"] .error')).to_contain_text("hello.write")
    assert pg.errors == []


# -- accessibility, layouts and screenshots --------------------------------------------------------------


def test_every_panel_passes_axe_and_is_photographed_at_desktop_and_phone_width(browser, server, artifacts):
    api = server["api"]
    # The editors' forms are checked too, open and showing a field error.
    entry = api.post("/whitelists", json={"system": "axe-1", "action": "PING"}).json()
    api.post(
        "/workflows",
        json={"name": "axe follow-up", "trigger_command": "PING", "on": "failed", "action_command": "DEPLOY"}
        | {"action_target": "web-1", "params_template_json": {"version": "1.0"}},
    )
    axe = AXE.read_text(encoding="utf-8")
    serious: dict[str, list[str]] = {}

    def check(pg, what: str) -> None:
        pg.add_script_tag(content=axe)
        result = pg.evaluate("axe.run(document, {resultTypes: ['violations']})")
        for v in result["violations"]:
            if v["impact"] in ("serious", "critical"):
                targets = [", ".join(map(str, n["target"])) for n in v["nodes"]][:5]
                serious.setdefault(what, []).append(f"{v['id']}: {targets}")

    def editors(pg, name: str, scheme: str) -> None:
        pg.click('[data-tab="whitelist"]')
        pg.click(f'button[aria-label="Edit {entry["system"]} {entry["action"]}"]')
        form = pg.locator(f'form[aria-label="Edit {entry["system"]} {entry["action"]}"]')
        form.get_by_label("Max attempts").fill("0")
        form.locator("button[type=submit]").click()
        form.locator(".field-error").wait_for()
        pg.screenshot(path=str(artifacts / f"commands-whitelist-edit-{name}-{scheme}.png"), full_page=True)
        check(pg, f"commands-whitelist-edit/{name}/{scheme}")
        pg.click('[data-tab="workflows"]')
        pg.click('button[aria-label="Edit workflow axe follow-up"]')
        pg.locator('form[aria-label="Edit workflow axe follow-up"]').wait_for()
        pg.screenshot(path=str(artifacts / f"commands-workflow-edit-{name}-{scheme}.png"), full_page=True)
        check(pg, f"commands-workflow-edit/{name}/{scheme}")

    for name, viewport in (("desktop", {"width": 1280, "height": 800}), ("phone", {"width": 390, "height": 844})):
        for scheme in ("light", "dark") if name == "desktop" else ("light",):
            # bypass_csp lets the test inject axe; the page itself never runs inline code.
            context = browser.new_context(viewport=viewport, color_scheme=scheme, bypass_csp=True)
            pg = context.new_page()
            pg.set_default_timeout(20_000)
            pg.goto(server["base"] + "/ui/")
            pg.wait_for_selector("#signin:not([hidden])")
            pg.screenshot(path=str(artifacts / f"signin-{name}-{scheme}.png"))
            sign_in(pg, server)
            for panel in PANELS:
                pg.goto(f"{server['base']}/ui/#/{panel}")
                pg.wait_for_selector(f'section[data-panel="{panel}"] > div > :not(.muted)')
                with contextlib.suppress(PlaywrightTimeout):  # the commands queue polls: idle is best effort
                    pg.wait_for_load_state("networkidle", timeout=5_000)
                pg.screenshot(path=str(artifacts / f"{panel}-{name}-{scheme}.png"), full_page=True)
                if panel == "templates" and pg.locator("iframe.preview").count():
                    # Full-page captures leave the sandboxed (out-of-process) preview blank: photograph it in view.
                    pg.locator("iframe.preview").scroll_into_view_if_needed()
                    pg.frame_locator("iframe.preview").locator("body").wait_for()
                    pg.screenshot(path=str(artifacts / f"templates-preview-{name}-{scheme}.png"))
                if name == "phone":
                    width = pg.evaluate("document.documentElement.scrollWidth")
                    assert width <= 390 + 1, f"{panel} scrolls sideways on a phone ({width}px)"
                check(pg, f"{panel}/{name}/{scheme}")
                if panel == "commands":
                    editors(pg, name, scheme)
                    if name == "phone":
                        width = pg.evaluate("document.documentElement.scrollWidth")
                        assert width <= 390 + 1, f"the command editors scroll sideways on a phone ({width}px)"
            context.close()
    assert not serious, serious
    assert {p.name for p in artifacts.glob("*-desktop-light.png")} >= {f"{p}-desktop-light.png" for p in PANELS}
