"""Fixtures: a real Radicale server (htpasswd auth, a free loopback port) and a switchable proxy in front of it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from caldav_support import PASSWORD, Proxy, Radicale


@pytest.fixture(scope="session")
def radicale(tmp_path_factory) -> Iterator[Radicale]:
    server = Radicale(tmp_path_factory.mktemp("radicale"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(radicale) -> Iterator[Proxy]:
    p = Proxy(radicale.base).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def password_env(monkeypatch) -> str:
    """The name of an environment variable holding the test user's password."""
    name = f"CALDAV_TEST_PW_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setenv(name, PASSWORD)
    return name
