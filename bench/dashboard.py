"""Benchmark of the dashboard (issue 16): the events panel in a real browser over a large event store.

1. Loads N synthetic events (``bench/gen_events.py``, the same file as ``bench/events_query.py``:
   ``bench/out/events-<N>.db``, reused when it holds them).
2. Starts ``chronos serve`` on that file with the events and web plugins (no jobs).
3. Drives Debian's Chromium with Playwright: for each round a fresh browser context opens
   ``/ui/``, signs in with an admin key and waits until the week view shows its events.
   Reported: sign-in to first week on screen (measured in the browser with ``performance.now()``),
   the events request's own time (Resource Timing), the JS and CSS the page fetched
   (uncompressed), and every events request each view made with its ``limit``.

Prints one table. Not a test: numbers depend on the machine.

    .venv/bin/python bench/dashboard.py                    # 1M events (the first run loads them: minutes)
    .venv/bin/python bench/dashboard.py --events 100000    # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from events_query import load, machine, settings_for, stored_count  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
BUDGET_KB = 300
TARGET_MS = 500


async def admin_key(db: Path) -> str:
    from chronos.app import create_app
    from chronos.testing import create_test_key, running_app

    app = create_app(settings_for(db), plugins=["events"], run_jobs=False, env={})
    async with running_app(app):
        return await create_test_key(app, ["admin"], name="bench-dashboard")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(db: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHRONOS")}
    env.update(
        {
            "CHRONOS__DATABASE__URL": f"sqlite+aiosqlite:///{db}",
            "CHRONOS__PLUGINS__ENABLED": '["events", "web"]',
            "CHRONOS__LOGGING__LEVEL": "warning",
        }
    )
    chronos = str(Path(sys.executable).parent / "chronos")
    return subprocess.Popen(
        [chronos, "serve", "--port", str(port), "--no-jobs"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def wait_up(base: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code in (200, 503):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("the server did not start")


def one_round(browser: Any, base: str, key: str) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/api/v1/events" in r.url else None)
    page.goto(f"{base}/ui/")
    page.wait_for_selector("#signin:not([hidden])")
    page.fill("#signin-key", key)
    start = page.evaluate("performance.now()")
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector(".daycol .ev", timeout=30_000)
    shown = page.evaluate("performance.now()")
    timing = page.evaluate(
        """() => performance.getEntriesByType('resource').map(e => ({name: e.name, duration: e.duration,
             size: e.decodedBodySize, type: e.initiatorType}))"""
    )
    count = page.locator(".daycol .ev").count()
    # The other views: each asks for one page.
    per_view: dict[str, list[str]] = {"week": list(requests)}
    for view in ("day", "agenda"):
        requests.clear()
        page.select_option('select[name="view"]', view)
        page.wait_for_load_state("networkidle")
        per_view[view] = list(requests)
    context.close()
    events_entry = [t for t in timing if "/api/v1/events?" in t["name"]]
    assets = [t for t in timing if urlparse(t["name"]).path.endswith((".js", ".css"))]
    return {
        "ms": shown - start,
        "events_ms": events_entry[0]["duration"] if events_entry else float("nan"),
        "shown": count,
        "asset_bytes": sum(t["size"] for t in assets),
        "assets": sorted({urlparse(t["name"]).path for t in assets}),
        "per_view": per_view,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path, default=None, help="SQLite file (default: bench/out/events-<N>.db)")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()

    db = args.db or HERE / "out" / f"events-{args.events}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    if stored_count(db) != args.events:
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        print(f"loading {args.events:,} events into {db} …", file=sys.stderr)
        asyncio.run(load(db, args.events, 5000))
    key = asyncio.run(admin_key(db))

    from playwright.sync_api import sync_playwright

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve(db, port)
    try:
        wait_up(base)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            one_round(browser, base, key)  # warm the server's caches and the browser
            rounds = [one_round(browser, base, key) for _ in range(args.rounds)]
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)

    ms = [r["ms"] for r in rounds]
    api_ms = [r["events_ms"] for r in rounds]
    last = rounds[-1]
    static = HERE.parent / "web" / "chronos_web" / "static"
    on_disk = sum(f.stat().st_size for f in static.rglob("*") if f.suffix in (".js", ".css"))
    print()
    print(f"Machine: {machine()}")
    print(f"Data: {args.events:,} events in {db} ({db.stat().st_size / 2**20:,.0f} MB); {args.rounds} rounds")
    print()
    print(f"{'measure':<52} {'p50':>9} {'max':>9} {'target':>9}")
    print(
        f"{'sign-in click to first week on screen (ms)':<52} {statistics.median(ms):>9.0f} {max(ms):>9.0f} {TARGET_MS:>9}"
    )
    print(f"{'  of which GET /api/v1/events (ms)':<52} {statistics.median(api_ms):>9.0f} {max(api_ms):>9.0f} {'':>9}")
    print(f"{'events on screen in the first week':<52} {last['shown']:>9} {'':>9} {'':>9}")
    print(f"{'JS + CSS fetched, uncompressed (KB)':<52} {last['asset_bytes'] / 1024:>9.1f} {'':>9} {BUDGET_KB:>9}")
    print(f"{'JS + CSS shipped in web/ (KB, every panel)':<52} {on_disk / 1024:>9.1f} {'':>9} {BUDGET_KB:>9}")
    print(f"{'vendored editors (KB)':<52} {0:>9} {'':>9} {'':>9}")
    print()
    print("Events requests per view (one page each):")
    for view, urls in last["per_view"].items():
        limits = [parse_qs(urlparse(u).query).get("limit", ["?"])[0] for u in urls]
        print(f"  {view:<8} {len(urls)} request(s), limit {', '.join(limits) or '-'}")
    print()
    print("Files fetched: " + ", ".join(last["assets"]))


if __name__ == "__main__":
    main()
