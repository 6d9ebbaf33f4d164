"""chronos-commands: calendar entries as whitelisted commands, the command queue, workflows, notes and links."""
