"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints


class GreetIn(BaseModel):
    # ``\p{L}`` (any Unicode letter) is what the service's ``str.isalpha`` check accepts.
    name: Annotated[
        str,
        StringConstraints(min_length=1, max_length=100, strip_whitespace=True, pattern=r"\p{L}"),
        Field(description="Who to greet: at least one letter (Unicode); surrounding spaces are dropped."),
    ]


class GreetOut(BaseModel):
    id: int
    message: str
    times_greeted: int


class GreetingOut(BaseModel):
    id: int
    name: str
    created_at: datetime


class GreetingPage(BaseModel):
    items: list[GreetingOut]
    next_cursor: str | None = Field(description="Pass as ``cursor`` for the next (older) page; null at the end.")
