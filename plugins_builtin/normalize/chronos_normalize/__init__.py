"""Normalisers and enrichers for the Chronos sync pipeline."""
