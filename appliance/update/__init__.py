"""Remote updates: a TUF repository of releases, and the phone's updater.

Publishing side (``appliance release``): ``repository`` (TUF metadata, keys),
``artifact`` (the release tarball), ``release_cli``. Phone side: ``machine``
(the pure state machine) and ``policy`` (what it decides by), ``source``
(TUF's ngclient over HTTP), ``releases`` (release directories and the atomic
switch), ``service`` (the asyncio driver) and ``update_cli``
(``appliance update``). docs/updates.md tells the story.
"""
