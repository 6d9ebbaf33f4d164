"""Slack channel for Chronos: outbox messages as Block Kit, through an incoming webhook or chat.postMessage."""
