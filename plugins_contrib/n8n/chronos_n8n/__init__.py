"""n8n channel for Chronos: outbox messages as signed POSTs to an n8n Webhook node."""
