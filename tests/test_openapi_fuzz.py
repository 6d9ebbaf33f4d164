"""Property-based checks of the whole OpenAPI document with every installed plugin enabled.

Schemathesis generates requests for every operation, sends them in-process
(ASGI, the app's lifespan running) with an admin key, and fails on any 5xx or
any response that contradicts the document. SQLite only: the HTTP contract does
not depend on the backend, and the storage tests cover PostgreSQL.
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

# Schemathesis needs the app when it builds the tests (at collection); nothing
# touches the database until its lifespan starts with the first request.
_DATA = Path(tempfile.mkdtemp(prefix="chronos-fuzz-"))
APP = create_app(
    kit.make_test_settings(
        kit.TestDatabase("sqlite", f"sqlite+aiosqlite:///{_DATA / 'fuzz.db'}"),
        {"plugins": {"strict": True}, "logging": {"level": "error"}},
    ),
    plugins=None,
    run_jobs=False,
    env={},
)
# Valid-by-schema requests may still be refused for reasons a schema cannot
# express: a forged opaque cursor (400) or a semantic rule such as an unknown
# scope (422). Everything else a positive case gets must be a success.
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "403", "404", "409", "422"]}}}
)
# Loaded from the document directly (no request at import, so no lifespan yet);
# calls go to the app in-process.
schema = schemathesis.openapi.from_dict(APP.openapi(), config=CONFIG)
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
