"""Phone package."""
