"""The ICS plugin's tests: make the shared helpers importable (pytest runs with importlib mode)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from ics_support import feed_server  # noqa: E402,F401  (a fixture)
