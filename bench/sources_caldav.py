"""CalDAV sync benchmark: the caldav source through the whole pipeline, next to a bare-library floor.

    python bench/sources_caldav.py [N=50000] [--keep DIR]

A Radicale server (htpasswd auth, loopback) gets one calendar of N generated
events, written straight into its storage folder (uploading 50k events one PUT
at a time would take far longer than the sync itself). Then:

(a) full sync of the N events through the pipeline (caldav source → normalize
    → events store, SQLite), next to a floor that lists the same calendar with
    the bare caldav library (one calendar-query REPORT through
    ``DAVClient.report``, the calendar data read from the library's parsed
    answer; ``Calendar.search`` would also parse every object with icalendar,
    a slower floor) and inserts raw rows (uid, start, end, summary read with regular
    expressions) with sqlite3 into the events plugin's migrated table;
(b) incremental sync with 10 events changed among the N: HTTP requests made and
    the time of the sync-collection REPORT as the client sees it (an upper
    bound of the server's time), next to the same REPORT sent by the bare
    library and to Radicale's own sync computation in-process (no HTTP), with
    its default item cache and with ``use_mtime_and_size_for_item_cache``;
(c) a sync with nothing changed.

Prints a table; nothing here is a test.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

USER, PASSWORD = "bench", "bench-pw"
PASSWORD_ENV = "CHRONOS_BENCH_CALDAV_PASSWORD"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Radicale:
    def __init__(self, root: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        (root / "users").write_text(f"{USER}:{PASSWORD}\n")
        self.storage = root / "collections"
        config = root / "config"
        config.write_text(
            f"[server]\nhosts = 127.0.0.1:{self.port}\nmax_content_length = 1000000000\ntimeout = 600\n"
            f"[auth]\ntype = htpasswd\nhtpasswd_filename = {root / 'users'}\nhtpasswd_encryption = plain\n"
            f"[rights]\ntype = owner_only\n[storage]\nfilesystem_folder = {self.storage}\n"
            # What Radicale offers for large collections ("improves speed"): its item cache is keyed
            # by each file's mtime and size instead of a SHA-256 of its content, so a sync-collection
            # REPORT (Radicale recomputes the collection's state on every one) stats the 50k files
            # instead of reading and hashing them. The table below measures both settings.
            "use_mtime_and_size_for_item_cache = True\n"
            "[web]\ntype = none\n[logging]\nlevel = warning\n"
            # Radicale refuses a REPORT of more than 10,000 events by default (anti-DoS): the floor's
            # one-REPORT listing needs more. (The caldav source also lists by etags and multigets.)
            "[reporting]\nmax_expand_occurrence = 1000000\n"
        )
        self.log = (root / "radicale.log").open("wb")
        # Radicale fsyncs every cache file it writes (an internal option the config file cannot set):
        # without turning that off, its one-time cache build of 50k items takes longer than everything
        # measured here. Both sides read the same warmed server.
        launcher = (
            "import sys; from radicale import config, log, server; log.setup();"
            " c = config.load([(sys.argv[1], False)]);"
            " c.update({'storage': {'_filesystem_fsync': 'False'}}, 'bench', privileged=True);"
            " server.serve(c)"
        )
        self.proc = subprocess.Popen([sys.executable, "-c", launcher, str(config)], stdout=self.log, stderr=self.log)

        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("Radicale did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()

    def write_calendar(self, name: str, n: int) -> str:
        """N events as .ics files in a new collection, written directly into the storage folder."""
        from gen_events import event_to_vevent, iter_events

        folder = self.storage / "collection-root" / USER / name
        if folder.is_dir() and sum(1 for _ in folder.glob("*.ics")) == n:
            return f"{self.base}/{USER}/{name}/"  # kept from an earlier run (--keep): its caches too
        folder.mkdir(parents=True)
        (folder / ".Radicale.props").write_text(json.dumps({"tag": "VCALENDAR", "D:displayname": name}))
        for ev in iter_events(n, seed=7, calendars=1, years=1):
            body = event_to_vevent(ev).strip()
            text = f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//chronos bench//EN\r\n{body}\r\nEND:VCALENDAR\r\n"
            (folder / f"{ev['uid']}.ics").write_text(text, newline="")
        return f"{self.base}/{USER}/{name}/"


# -- the floor: the bare caldav library and raw rows ------------------------------------------------

QUERY = (
    '<?xml version="1.0" encoding="utf-8"?><c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">'
    "<d:prop><d:getetag/><c:calendar-data/></d:prop>"
    '<c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT"/></c:comp-filter></c:filter>'
    "</c:calendar-query>"
)
TOKEN_QUERY = (
    '<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop><d:sync-token/></d:prop></d:propfind>'
)
_PROP = {name: re.compile(rf"^{name}[;:][^\n]*?([^:\n]*)\r?$", re.M) for name in ("UID", "DTSTART", "DTEND", "SUMMARY")}


def _floor(url: str, db: Path) -> dict:
    import caldav

    out: dict = {}
    t = time.perf_counter()
    client = caldav.DAVClient(url=url, username=USER, password=PASSWORD, enable_rfc6764=False, timeout=600)
    # Not part of the floor: what reading a sync token costs the server before a listing (a correct
    # full sync needs one that predates the listing), shown next to it.
    resp = client.propfind(url, TOKEN_QUERY, depth=0)
    out["token_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    resp = client.report(url, QUERY, depth=1)
    if resp.status != 207 or resp.tree is None:
        raise SystemExit(f"the floor's listing failed: HTTP {resp.status} {resp.reason}")
    data = [el.text or "" for el in resp.tree.iter("{urn:ietf:params:xml:ns:caldav}calendar-data")]
    out["list_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    rows = []
    for text in data:
        got = {k: (m.group(1) if (m := p.search(text)) else "") for k, p in _PROP.items()}
        rows.append(("caldav", "bench", got["UID"], "", got["SUMMARY"], got["DTSTART"], got["DTEND"], now, now))
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO events (source, calendar_id, uid, recurrence_id, title, start_utc, end_utc, created_at, updated_at,"
        " description, location, duration_seconds, all_day, status, transparency, mode, tags, sub_tasks, all_done,"
        " metadata, content_hash, source_hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '', '', 0, 0, 'confirmed', 'busy', 'free', '[]', '[]', 0, '{}', '', '')",
        rows,
    )
    conn.execute("COMMIT")
    out["insert_seconds"] = time.perf_counter() - t
    out["rows"] = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    return out


# -- the pipeline -----------------------------------------------------------------------------------------


def _settings(db: Path, url: str):
    from chronos.settings import load_settings

    calendar = {
        "id": "bench",
        "url": url,
        "username": USER,
        "password_env": PASSWORD_ENV,
        "interval_seconds": 0,
        "past_days": 3650,
        "horizon_days": 3650,
    }
    return load_settings(
        path=None,
        env={},
        database={"url": f"sqlite+aiosqlite:///{db}"},
        logging={"level": "warning"},
        network={"allow": ["127.0.0.1/32"]},
        caldav={"calendars": [calendar], "timeout_seconds": 600},
    )


async def _migrate(db: Path, url: str) -> None:
    from chronos.app import create_app
    from chronos.testing import running_app

    async with running_app(create_app(_settings(db, url), plugins=["events"], run_jobs=False, env={})):
        pass


async def _pipeline(db: Path, url: str, change) -> dict:
    from chronos.app import create_app
    from chronos.db.sync_models import SyncRun
    from chronos.testing import running_app

    os.environ[PASSWORD_ENV] = PASSWORD
    app = create_app(_settings(db, url), plugins=["events", "normalize", "caldav"], run_jobs=False, env={})
    out: dict = {}
    async with running_app(app):
        pipe = app.state.runtime.pipeline
        source = pipe.calendar("caldav", "bench").source
        for label in ("full", "incremental", "unchanged"):
            if label == "incremental":
                await asyncio.to_thread(change)
            t = time.perf_counter()
            run_id = await pipe.run("caldav", "bench")
            elapsed = time.perf_counter() - t
            async with app.state.chronos.db.read() as s:
                run = await s.get(SyncRun, run_id)
            out[label] = {
                "seconds": elapsed,
                "status": run.status,
                "added": run.added,
                "updated": run.updated,
                "not_modified": run.not_modified,
                "requests": source.requests["bench"],
                "http_seconds": source.http_seconds["bench"],
                "cursor": run.cursor or {},
            }
    return out


def _server_sync(url: str, token: str) -> float:
    """The incremental's one request sent with the bare caldav library: the server's time as a client sees it."""
    import caldav

    body = (
        '<?xml version="1.0" encoding="utf-8"?><d:sync-collection xmlns:d="DAV:"'
        ' xmlns:c="urn:ietf:params:xml:ns:caldav">'
        f"<d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level>"
        "<d:prop><d:getetag/><c:calendar-data/></d:prop></d:sync-collection>"
    )
    client = caldav.DAVClient(url=url, username=USER, password=PASSWORD, enable_rfc6764=False, timeout=600)
    t = time.perf_counter()
    resp = client.report(url, body, depth=1)
    elapsed = time.perf_counter() - t
    if resp.status != 207:
        raise SystemExit(f"the bare sync-collection REPORT failed: HTTP {resp.status} {resp.reason}")
    return elapsed


def _radicale_alone(storage: Path, token: str) -> dict[str, float]:
    """Radicale's own sync computation for ``token`` (in-process, no HTTP), per item-cache setting.

    Each setting is warmed once (its item cache is keyed differently), then timed."""
    from radicale import config, storage as radicale_storage

    out = {}
    for mtime in ("False", "True"):
        conf = config.load([])
        storage_options = {
            "filesystem_folder": str(storage),
            "_filesystem_fsync": "False",
            "use_mtime_and_size_for_item_cache": mtime,
        }
        conf.update({"storage": storage_options}, "bench", privileged=True)
        store = radicale_storage.load(conf)
        with store.acquire_lock("r", USER):
            (collection,) = list(store.discover(f"/{USER}/bench/", depth="0"))
            list(collection.sync(token)[1])
            t = time.perf_counter()
            list(collection.sync(token)[1])
            out[mtime] = time.perf_counter() - t
    return out


def _change_ten(url: str) -> None:
    import caldav

    client = caldav.DAVClient(url=url, username=USER, password=PASSWORD, enable_rfc6764=False)
    cal = client.calendar(url=url)
    from gen_events import event_to_vevent, iter_events

    stamp = time.strftime("%H:%M:%S")
    for ev in list(iter_events(10, seed=7, calendars=1, years=1)):
        ev["title"] = ev["title"] + f" (changed {stamp})"  # new each run: a kept calendar changes again
        body = event_to_vevent(ev).strip()
        cal.add_event(f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//chronos bench//EN\r\n{body}\r\nEND:VCALENDAR\r\n")


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    keep = None
    if "--keep" in sys.argv:
        keep = Path(sys.argv[sys.argv.index("--keep") + 1])
        args = [a for a in args if Path(a) != keep]
    n = int(args[0]) if args else 50_000
    root = keep or Path(tempfile.mkdtemp(prefix="chronos-caldav-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    server = Radicale(root)
    try:
        t = time.perf_counter()
        url = server.write_calendar("bench", n)
        written = time.perf_counter() - t
        # Radicale builds its item cache on the first read: do it once, outside both measurements.
        import caldav

        t = time.perf_counter()
        client = caldav.DAVClient(url=url, username=USER, password=PASSWORD, enable_rfc6764=False, timeout=3600)
        warm = client.report(url, QUERY, depth=1)
        first_read = time.perf_counter() - t
        if warm.status != 207:
            raise SystemExit(f"Radicale's first read failed: HTTP {warm.status} {warm.reason}")
        # …and its sync history (a history etag file per item) at the first sync token anyone asks for.
        t = time.perf_counter()
        client.propfind(url, TOKEN_QUERY, depth=0)
        first_token = time.perf_counter() - t

        for old in root.glob("*.db*"):  # an earlier run's databases (--keep)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        floor_db = root / "floor.db"
        asyncio.run(_migrate(floor_db, url))
        floor = _floor(url, floor_db)
        ours = asyncio.run(_pipeline(root / "pipeline.db", url, lambda: _change_ten(url)))
        before_changes = str(ours["full"]["cursor"].get("sync_token") or "")
        bare_sync = _server_sync(url, before_changes) if before_changes else float("nan")
        server.stop()
        alone = _radicale_alone(server.storage, before_changes) if before_changes else {}
    finally:
        if server.proc.poll() is None:
            server.stop()
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)

    floor_seconds = floor["list_seconds"] + floor["insert_seconds"]
    floor_rate = floor["rows"] / floor_seconds
    full = ours["full"]
    rate = full["added"] / full["seconds"]
    print(f"CalDAV sync of {n:,} events through Radicale 3 (SQLite), loopback")
    print(
        f"  writing the collection into Radicale's storage folder: {written:.1f} s; Radicale's first read: {first_read:.1f} s,"
        f" its first sync token: {first_token:.1f} s (one-time costs of the server, outside both measurements)"
    )
    print()
    print(f"| {'measurement':<46} | {'seconds':>8} | {'events/s':>9} | {'requests':>8} |")
    print(f"| {'-' * 46} | {'-' * 8}:| {'-' * 9}:| {'-' * 8}:|")
    print(
        f"| {'floor: bare caldav listing + raw sqlite3 rows':<46} | {floor_seconds:>8.2f} | {floor_rate:>9,.0f} | {1:>8} |"
    )
    print(f"| {'   of which the listing (one REPORT)':<46} | {floor['list_seconds']:>8.2f} | {'':>9} | {'':>8} |")
    print(f"| {'   of which the inserts':<46} | {floor['insert_seconds']:>8.2f} | {'':>9} | {'':>8} |")
    print(
        f"| {'full sync through the pipeline':<46} | {full['seconds']:>8.2f} | {rate:>9,.0f} | {full['requests']:>8} |"
    )
    print(f"| {'   of which waiting for the server (HTTP)':<46} | {full['http_seconds']:>8.2f} | {'':>9} | {'':>8} |")
    print(
        f"| {'   of which our side (the rest)':<46} | {full['seconds'] - full['http_seconds']:>8.2f} | {'':>9} | {'':>8} |"
    )
    print(
        f"| {'the sync token alone (PROPFIND, bare library)':<46} | {floor['token_seconds']:>8.2f} | {'':>9} | {1:>8} |"
    )
    inc = ours["incremental"]
    print(
        f"| {'incremental, 10 changed (updated: ' + str(inc['updated']) + ')':<46} | {inc['seconds']:>8.2f} |"
        f" {'':>9} | {inc['requests']:>8} |"
    )
    print(f"| {'   of which waiting for the server (HTTP)':<46} | {inc['http_seconds']:>8.3f} | {'':>9} | {'':>8} |")
    print(
        f"| {'   of which our side (the rest)':<46} | {inc['seconds'] - inc['http_seconds']:>8.3f} | {'':>9} | {'':>8} |"
    )
    print(f"| {'   the same REPORT sent by the bare library':<46} | {bare_sync:>8.3f} | {'':>9} | {1:>8} |")
    for mtime, label in (("False", "default item cache"), ("True", "mtime_and_size cache")):
        if mtime in alone:
            shown = f"   Radicale's sync alone ({label})"
            print(f"| {shown:<46} | {alone[mtime]:>8.3f} | {'':>9} | {'':>8} |")
    unc = ours["unchanged"]
    print(f"| {'nothing changed (not modified)':<46} | {unc['seconds']:>8.2f} | {'':>9} | {unc['requests']:>8} |")
    print()
    print(f"pipeline / floor: {rate / floor_rate:.0%} (target: at least 50%)")
    with_token = floor["rows"] / (floor_seconds + floor["token_seconds"])
    print(f"pipeline / (floor + the sync token read first): {rate / with_token:.0%}")
    print("load average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(
        f"statuses: full {full['status']}, incremental {inc['status']}, unchanged {unc['status']} (not modified: {unc['not_modified']})"
    )


if __name__ == "__main__":
    main()
