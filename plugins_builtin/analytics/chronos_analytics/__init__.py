"""Chronos analytics: time allocation, summaries, follow-up labels."""
