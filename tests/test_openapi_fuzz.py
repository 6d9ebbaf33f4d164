"""Property-based checks of the whole OpenAPI document with every installed plugin enabled.

Schemathesis generates requests for every operation, sends them in-process
(ASGI, the app's lifespan running) with an admin key, and fails on any 5xx or
any response that contradicts the document. SQLite only: the HTTP contract does
not depend on the backend, and the storage tests cover PostgreSQL.

Every check schemathesis has is on (its defaults): no 5xx, documented statuses,
content types, headers and bodies, valid requests accepted, invalid ones refused.
The key is the bootstrap key (``CHRONOS_ADMIN_KEY``, id ``bootstrap``), which no
request can revoke, ``DELETE /keys/{id}?force=true`` included; every other
destructive operation only touches what the fuzz itself created, so no case can
break a later one.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from chronos import testing as kit
from chronos.app import create_app

ADMIN_KEY = "fuzz-admin-key-0123456789abcdef"

# Schemathesis's negative-data mutations (schemathesis/specs/openapi/negative) draw
# from the global ``random`` module inside its strategies, which Hypothesis
# deprecates; nothing in this project does. Only that one message is silenced.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies:hypothesis.errors.HypothesisDeprecationWarning"
)

# Schemathesis needs the app when it builds the tests (at collection); nothing
# touches the database until its lifespan starts with the first request.
_DATA = Path(tempfile.mkdtemp(prefix="chronos-fuzz-"))
APP = create_app(
    kit.make_test_settings(
        kit.TestDatabase("sqlite", f"sqlite+aiosqlite:///{_DATA / 'fuzz.db'}"),
        # Mail configured (a sender; nothing is sent: jobs do not run), so sending is fuzzed past its 503;
        # backups go beside the fuzz database.
        {
            "plugins": {"strict": True},
            "logging": {"level": "error"},
            "mail": {"from": "Chronos <chronos@example.com>"},
            "backups": {"directory": str(_DATA / "backups")},
        },
    ),
    plugins=None,
    run_jobs=False,
    env={},
)
# A valid-by-schema request gets a 2xx, except for what no schema can state:
# - an id in the path that names nothing stored: 404;
# - a forged or stale ``cursor`` (documented as an opaque string; the server
#   answers 400 ``invalid-cursor`` and the client starts again without it);
# - the semantic rules below, each checked against stored or configured state
#   and documented on its operation. Keep this list small.
SEMANTIC: dict[str, tuple[str, ...]] = {
    # The whitelist (stored entries) decides which commands exist.
    "POST /api/v1/commands": ("422",),
    "POST /api/v1/workflows": ("422",),
    "PATCH /api/v1/workflows/{workflow_id}": ("422",),
    # Unique names and entries: the second request with the same one conflicts (409); each
    # param's regex must compile with RE2 and have at most 20 groups (422).
    "POST /api/v1/whitelists": ("409", "422"),
    "PATCH /api/v1/whitelists/{entry_id}": ("409", "422"),
    # With analytics=true or text, `to` may be at most events.query_max_window_days after `from` (422).
    "GET /api/v1/events": ("422",),
    # Templates: a unique name (409); every part must compile in the Jinja2 sandbox, variables_json
    # must be a valid JSON Schema, no part may exceed templates.max_source_chars (422).
    "POST /api/v1/templates": ("409", "422"),
    "PUT /api/v1/templates/{template_id}": ("409", "422"),
    # ... and a patch merges into the stored content, which must still be complete for its type
    # (a changed type needs that type's full content).
    "PATCH /api/v1/templates/{template_id}": ("409", "422"),
    # ... and no name twice in one document.
    "POST /api/v1/templates/import": ("409", "422"),
    # The variables must satisfy the stored template's variables_json and render; an event template
    # needs start or date and a calendar that may be written.
    "POST /api/v1/templates/{template_id}/use": ("422",),
    # A new event's end is after its start, and both are dates or both datetimes (a rule across two fields).
    "POST /api/v1/events": ("422",),
    # A sub-task id must name one of the stored event's sub-tasks.
    "PATCH /api/v1/events/{event_id}": ("422",),
    # Only an email template can be test-sent; the stored template's type decides. It queues mail:
    # an Idempotency-Key already used (here or on /mail/send) with another body is a 409.
    "POST /api/v1/templates/{template_id}/test-send": ("409", "422"),
    # A job or a sync already running answers 409 (busy).
    "POST /api/v1/jobs/{name}/run": ("409",),
    "POST /api/v1/events/sync": ("409",),
    # An event cannot link to itself (the body's id equals the path's).
    "POST /api/v1/events/{event_id}/links": ("422",),
    # An import is all or nothing: a source key that exists already (on_conflict=fail) is a 409;
    # duplicate ids or keys inside the document, and events for a calendar that may not be
    # written locally, are a 422.
    "POST /api/v1/events/import": ("409", "422"),
    # The feed token in the query is a credential: an unknown one is a 401.
    "GET /api/v1/calendars/feed.ics": ("401",),
    "GET /api/v1/calendars/{calendar_id}/feed.ics": ("401",),
    # Limits from settings across fields: To, Cc and Bcc together at most mail.max_recipients,
    # html and text each at most mail.max_body_chars; a template_id must name a stored email
    # template whose variables_json the variables satisfy (422). Addresses, base64 content,
    # file names and content types are patterns in the document. An Idempotency-Key already used
    # with another body is a 409.
    "POST /api/v1/mail/send": ("409", "422"),
    # One backup at a time: starting one while another runs, and downloading, verifying or deleting
    # one still being written, is a 409.
    "POST /api/v1/backups": ("409",),
    "GET /api/v1/backups/{backup_id}/download": ("409",),
    "POST /api/v1/backups/{backup_id}/verify": ("409",),
    "DELETE /api/v1/backups/{backup_id}": ("409",),
    # A webhook URL must pass the outbound guard: its host resolves, and only to public addresses
    # (or ones in network.allow); no schema can state what a name resolves to (422).
    "POST /api/v1/webhooks": ("422",),
    "PATCH /api/v1/webhooks/{endpoint_id}": ("422",),
    # A disabled endpoint (the stored enabled flag) gets no test message (409).
    "POST /api/v1/webhooks/{endpoint_id}/test": ("409",),
    # Planning: `to` after `from` and at most planning.max_window_days later; a duration that fits
    # the window, at most planning.max_proposals slots, known calendars and time zones (422).
    "GET /api/v1/conflicts": ("422",),
    "POST /api/v1/plan/proposals": ("422",),
    # Only timed events of local calendars move, and only to a proposal still offered (409).
    "POST /api/v1/events/{event_id}/reschedule": ("409",),
    # Analytics: `to` after `from` and at most analytics.max_window_days later, a known time zone (422).
    "GET /api/v1/analytics/time-allocation": ("422",),
    "GET /api/v1/analytics/summary": ("422",),
}


def _expected(path: str, method: str, op: dict) -> list[str]:
    name = f"{method.upper()} {path}"
    statuses = {"2xx", *SEMANTIC.get(name, ())}
    params = op.get("parameters") or []
    if any(p.get("in") == "path" for p in params):
        statuses.add("404")
    if any(p.get("in") == "query" and p.get("name") == "cursor" for p in params):
        statuses.add("400")
    return sorted(statuses)


DOCUMENT = APP.openapi()
CONFIG = SchemathesisConfig.from_dict(
    {
        "operations": [
            {
                "include-name": f"{method.upper()} {path}",
                "checks": {"positive_data_acceptance": {"expected-statuses": _expected(path, method, op)}},
            }
            for path, item in DOCUMENT["paths"].items()
            for method, op in item.items()
            if isinstance(op, dict)
        ],
    }
)
# Loaded from the document directly (no request at import, so no lifespan yet);
# calls go to the app in-process.
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
schema.app = APP
schema.location = "/openapi.json"


@pytest.fixture(autouse=True)
def admin_key(monkeypatch):
    monkeypatch.setenv("CHRONOS_ADMIN_KEY", ADMIN_KEY)


@pytest.fixture(autouse=True, scope="module")
def stop_app():
    yield
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()
    shutil.rmtree(_DATA, ignore_errors=True)


@schema.parametrize()
# Derandomised with no example database: CI explores the same cases every run.
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
def test_every_operation_honours_the_document(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN_KEY}"})
