"""An overridden API address (``google.api_base_url``): every connection goes only to an address the
outbound guard checked when connecting, never to one httplib2 would find by resolving the name again."""

from __future__ import annotations

import json
import re
import socket
from urllib.parse import urlsplit

import pytest

from google_support import config, soon, sync, timed

PLUGINS = ["events", "normalize", "google"]
CAL = "team@group.calendar.google.com"


@pytest.fixture
def lookups(monkeypatch):
    """Names under ``.google.test`` answered from a table (each name's answers in turn, the last one repeated);
    the answers given are recorded by name. The system resolver does not know these names."""
    system_lookup = socket.getaddrinfo
    table: dict[str, list[str]] = {}
    given: dict[str, list[str]] = {}

    def lookup(host, port, *args, **kwargs):
        if not isinstance(host, str) or not host.endswith(".google.test"):
            return system_lookup(host, port, *args, **kwargs)
        answers = given.setdefault(host, [])
        wanted = table[host]
        answers.append(wanted[min(len(answers), len(wanted) - 1)])
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[-1], int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    return table, given


def named_config(fake, tmp_path, api_host: str, allow: list[str]) -> dict:
    """The fake server under host names: the API at ``api_host``, the token endpoint at ``token.google.test``."""
    port = urlsplit(fake.base).port
    cfg = config(fake, tmp_path, {"id": "team"})
    key = cfg["google"]["credentials"]["service_account_file"]
    with open(key) as f:
        info = json.load(f)
    info["token_uri"] = f"http://token.google.test:{port}/token"
    with open(key, "w") as f:
        json.dump(info, f)
    cfg["google"]["api_base_url"] = f"http://{api_host}:{port}"
    cfg["network"] = {"allow": allow}
    return cfg


async def test_the_connection_goes_to_the_address_the_guard_checked(chronos_app, fake_google, tmp_path, lookups):
    """The names resolve only through the guard: the run succeeds because the connections use its addresses."""
    table, given = lookups
    table["api.google.test"] = ["127.0.0.1"]
    table["token.google.test"] = ["127.0.0.1"]
    fake_google.put(CAL, timed("t1", soon(1)))
    cfg = named_config(fake_google, tmp_path, "api.google.test", ["127.0.0.1/32"])
    async with chronos_app(plugins=PLUGINS, config=cfg) as app:
        run = await sync(app, "team")
        assert run.status == "ok", run.error
        assert run.added == 1
        assert len(fake_google.list_requests()) == 1
        assert given["api.google.test"] and given["token.google.test"]


async def test_a_name_that_rebinds_to_a_refused_address_after_the_check_is_not_connected(
    chronos_app, fake_google, tmp_path, lookups
):
    """The check before the run sees an allowed address; every later lookup answers loopback (refused).
    The client connects only to addresses the guard checked at connect time, so nothing reaches the API."""
    table, given = lookups
    table["api.google.test"] = ["127.0.0.2", "127.0.0.1"]
    table["token.google.test"] = ["127.0.0.1"]  # allow-listed by name: trusted with what it resolves to
    fake_google.put(CAL, timed("t1", soon(1)))
    cfg = named_config(fake_google, tmp_path, "api.google.test", ["127.0.0.2/32", "token.google.test"])
    async with chronos_app(plugins=PLUGINS, config=cfg) as app:
        run = await sync(app, "team")
        assert run.status == "error", run
        assert "refused by the outbound network policy" in run.error, run.error
        assert re.search(r"api\.google\.test \(127\.0\.0\.1\) is a loopback address", run.error), run.error
        assert given["api.google.test"][:2] == ["127.0.0.2", "127.0.0.1"]  # checked before the run, then at connect
        assert fake_google.list_requests() == []
