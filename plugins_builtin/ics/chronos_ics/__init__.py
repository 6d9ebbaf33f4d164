"""The ICS source: iCalendar files and feeds for the Chronos sync pipeline."""
