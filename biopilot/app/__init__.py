"""The application shell: the `biopilot` CLI, its commands, and the supervisor that starts the stages.

It may import every package; nothing imports it (biopilot.__main__ aside)."""
