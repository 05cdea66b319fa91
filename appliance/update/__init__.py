"""Remote updates: a TUF repository of releases, and the phone's updater.

``repository`` and ``artifact`` are the publishing side (``appliance
release``); the phone side verifies everything through python-tuf's ngclient.
"""
