"""Kernel and cross-plugin tests: shared helpers live in ``kernel_support``."""

from __future__ import annotations

import sys
from pathlib import Path

# The suite runs with --import-mode=importlib, which leaves sys.path alone; the
# helper module beside this file is made importable explicitly.
sys.path.insert(0, str(Path(__file__).resolve().parent))

