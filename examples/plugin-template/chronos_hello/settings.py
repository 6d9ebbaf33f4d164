"""The plugin's configuration section ``hello:`` (validated at start-up)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class HelloSettings(BaseModel):
    """Section `hello:` in config/chronos.yaml."""

    greeting: str = Field("Hello", max_length=50, description="Word used to greet.")
