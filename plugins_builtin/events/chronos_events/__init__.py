"""chronos-events: the event store, its search, the event API and ICS feeds."""
