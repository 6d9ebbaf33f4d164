"""The plugin's per-app objects (kernel-managed resources)."""

from __future__ import annotations

from chronos.plugin import PluginContext, Resource

from chronos_commands.queue import CommandQueue
from chronos_commands.settings import CommandsSettings
from chronos_commands.workflows import WorkflowEngine


def _make_queue(ctx: PluginContext) -> CommandQueue:
    queue = CommandQueue(ctx, ctx.section(CommandsSettings))
    queue.workflows = WorkflowEngine(queue)
    return queue


#: The app's one command queue (with its workflow engine).
QUEUE: Resource[CommandQueue] = Resource("commands.queue", _make_queue)


def queue_of(ctx: PluginContext) -> CommandQueue:
    return ctx.resource(QUEUE)
