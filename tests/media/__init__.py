"""Tests of appliance.media."""
