"""ORM models. Every table is prefixed with the plugin name (``hello_``) and
changes only through the revisions in ``migrations/versions/``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from chronos.plugin import Base, UTCDateTime, utcnow


class Greeting(Base):
    __tablename__ = "hello_greetings"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
