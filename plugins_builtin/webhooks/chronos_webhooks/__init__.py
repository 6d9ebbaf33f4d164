"""chronos-webhooks: the outbox, signed webhooks, retries and dead letters."""
