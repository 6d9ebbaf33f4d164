"""The ICS plugin's tests. Shared helpers live in ``ics_support`` (on pytest's ``pythonpath``, see pyproject.toml)."""

from ics_support import feed_server  # noqa: E402,F401  (a fixture)
