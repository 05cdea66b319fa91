"""Operating-system integration (systemd)."""
