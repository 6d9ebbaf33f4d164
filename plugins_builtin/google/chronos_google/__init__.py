"""The Google Calendar source for the Chronos sync pipeline."""
