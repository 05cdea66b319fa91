"""The call log: which calls came, went and were missed, kept across restarts.

:mod:`~appliance.calllog.core` decides what a log entry is from a call's
events (pure); :mod:`~appliance.calllog.store` keeps entries in SQLite;
:mod:`~appliance.calllog.recorder` listens to the Device and joins the two.
"""
