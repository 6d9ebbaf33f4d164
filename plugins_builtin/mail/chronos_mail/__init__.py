"""chronos-mail: HTML mail with attachments through SMTP, with a delivery log."""
