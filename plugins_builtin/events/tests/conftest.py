"""The events plugin's tests. Shared helpers live in ``events_support`` (on pytest's ``pythonpath``, see pyproject.toml)."""
