"""Media package."""
