"""Chronos planning: conflicts, working hours, proposals."""
