"""Backups of the Chronos database, configuration and assets, with verified restore."""
