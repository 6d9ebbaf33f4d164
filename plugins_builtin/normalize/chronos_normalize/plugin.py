"""Hook implementations: the ``normalize`` settings, normalisers and enrichers."""

from __future__ import annotations

from typing import Any

from chronos.plugin import SettingsSection, hookimpl

from chronos_normalize.settings import NormalizeSettings
from chronos_normalize.stages import (
    ChecklistEnricher,
    HashtagEnricher,
    LabelEnricher,
    TextNormalizer,
    TimeNormalizer,
)


@hookimpl
def register_settings():
    return [SettingsSection("normalize", NormalizeSettings)]


@hookimpl
def register_normalizers(ctx):
    return [TimeNormalizer(ctx.section(NormalizeSettings)), TextNormalizer()]


@hookimpl
def register_enrichers(ctx):
    settings = ctx.section(NormalizeSettings)
    out: list[Any] = []
    if settings.hashtags:
        out.append(HashtagEnricher())
    if settings.checklists:
        out.append(ChecklistEnricher())
    if settings.labels:
        out.append(LabelEnricher(settings.labels))
    return out
