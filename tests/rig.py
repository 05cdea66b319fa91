"""Moved to :mod:`appliance.rig` (the demo uses it too); re-exported here."""

from appliance.rig import RigProcess, RigUnavailableError, VirtualCards, timeout_factor

__all__ = ["RigProcess", "RigUnavailableError", "VirtualCards", "timeout_factor"]
