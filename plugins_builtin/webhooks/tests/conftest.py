"""The receiver fixture: a real HTTP server on a loopback port, scripted per test."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from webhooks_support import Receiver


@pytest.fixture
async def receiver():
    rec = Receiver()
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    rec.port = server.sockets[0].getsockname()[1]
    try:
        yield rec
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
