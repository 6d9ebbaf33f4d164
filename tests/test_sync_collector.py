"""A batch pauses the cyclic garbage collector while it is processed, and always resumes it."""

from __future__ import annotations

import gc

import pytest

from chronos.plugin import Sink
from chronos.testing import FakeSource, sync_now
from sync_support import draft, pipeline_plugins

pytestmark = pytest.mark.exercises_hook("register_sinks")


class CollectorProbe(Sink):
    """Records whether the collector runs while the batch is processed; raises on ``explode``."""

    name = "collector_probe"

    def __init__(self) -> None:
        self.enabled: list[bool] = []

    async def write(self, batch, session, ctx):
        self.enabled.append(gc.isenabled())
        if any("explode" in s.event.title for s in batch.added):
            raise RuntimeError("explode")


async def test_batches_pause_the_collector_and_resume_it_after_success_and_failure(chronos_app):
    source = FakeSource(["cal"])
    for i in range(3):
        source.add(draft(f"e{i}"))
    source.add(draft("bad", "explode"))
    probe = CollectorProbe()
    async with chronos_app(plugins=pipeline_plugins(source, sinks=[probe])) as app:
        assert gc.isenabled()
        run = await sync_now(app, "fake", "cal")
        assert run.status == "partial" and run.failed == 1  # the batch failed, then its items one by one
        assert probe.enabled and not any(probe.enabled)
        assert gc.isenabled()

        gc.disable()  # someone else's choice stays as it is
        try:
            source.add(draft("e9"))
            await sync_now(app, "fake", "cal")
            assert not gc.isenabled()
        finally:
            gc.enable()
