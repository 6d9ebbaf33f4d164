"""Kernel and cross-plugin tests.

Shared helpers live in ``kernel_support`` and ``sync_support`` beside this
file; pytest's ``pythonpath`` option (root pyproject.toml) makes them importable.
"""
