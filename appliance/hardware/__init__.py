"""Hardware package."""
