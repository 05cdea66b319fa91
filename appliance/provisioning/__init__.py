"""Provisioning: the token service (provisioner) and the phone's enrollment.

The provisioner (``appliance provisioner serve``) enrolls phones with the
OAuth 2.0 device authorization grant (RFC 8628) and mints their Access
Tokens; the phone side asks for a device code, shows it as a QR code and
keeps its token fresh. Pure cores: :mod:`.grant`, :mod:`.admin`, :mod:`.flow`.
"""
