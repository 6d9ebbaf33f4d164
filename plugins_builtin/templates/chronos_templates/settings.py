"""Settings section ``templates``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TemplatesSettings(BaseModel):
    """Section ``templates:`` in config/chronos.yaml."""

    model_config = ConfigDict(extra="forbid")

    render_timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="Longest a single render may take; slower templates fail with 422."
    )
    max_output_chars: int = Field(
        1_000_000, ge=1_000, le=50_000_000, description="Largest output of one template part, in characters."
    )
    max_loop_iterations: int = Field(
        100_000, ge=100, le=100_000_000, description="Total {% for %} iterations one render may run."
    )
    max_source_chars: int = Field(
        200_000, ge=1_000, le=5_000_000, description="Largest template part accepted on save."
    )
    max_variables_chars: int = Field(
        1_000_000, ge=1_000, description="Largest variables object (as JSON) accepted for a render."
    )
    render_threads: int = Field(2, ge=1, le=32, description="Worker threads rendering templates.")
    event_source: str = Field(
        "local",
        min_length=1,
        max_length=64,
        description="Source of events created from event templates (`local`: editable like API-created events).",
    )
    event_calendar: str = Field(
        "local", min_length=1, max_length=200, description="Calendar of events whose template names none."
    )
