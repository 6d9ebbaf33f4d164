"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, StringConstraints


class GreetIn(BaseModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]


class GreetOut(BaseModel):
    id: int
    message: str
    times_greeted: int


class GreetingOut(BaseModel):
    id: int
    name: str
    created_at: datetime
