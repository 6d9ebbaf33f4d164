"""The CalDAV source: calendar collections on CalDAV servers (Nextcloud, Radicale, …) for the Chronos sync pipeline."""
