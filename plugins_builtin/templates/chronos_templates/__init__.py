"""chronos-templates: sandboxed email, webhook and event templates."""
