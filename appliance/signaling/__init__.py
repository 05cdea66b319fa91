"""Signaling package."""
