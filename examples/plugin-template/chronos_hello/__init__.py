"""chronos-hello: a template for third-party Chronos plugins."""
