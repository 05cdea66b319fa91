"""Moved to :mod:`appliance_dev.rig` (the demo uses it too); re-exported here."""

from appliance_dev.rig import (
    RigProcess,
    RigUnavailableError,
    VirtualCards,
    timeout_factor,
)

__all__ = ["RigProcess", "RigUnavailableError", "VirtualCards", "timeout_factor"]
