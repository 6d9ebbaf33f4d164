"""Telegram channel for Chronos: outbox messages as Bot API ``sendMessage`` calls."""
