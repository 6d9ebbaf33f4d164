"""The google plugin's tests. The fake Google server lives in ``google_support`` (on pytest's ``pythonpath``)."""

from google_support import fake_google, google_server  # noqa: F401  (fixtures)
