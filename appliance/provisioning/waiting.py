"""A phone configured with neither a token nor a provisioner waits for one.

The image ships ``phone.token_file`` with ``provisioner_url`` commented out,
so a fresh unit has nothing to register with. Exiting would make systemd
restart it until it gives up, and the person at the desk would see a dead
phone. Instead the service reports READY (STATUS "waiting for a token or a
USB stick"), says so on the OLED, and :func:`wait_for_token_or_stick`
watches two things, whichever comes first:

* the token file appearing (written atomically by hand or by a tool);
* a USB stick (with ``phone.usb_dir`` and ``phone.usb_public_key_file``)
  whose signed file names the provisioner. Its signature by the key the
  image carries is what makes that name trustworthy, so the file's own
  ``provisioner_url`` is taken, its credential saved (with the URL, CA and
  pin, :mod:`.credential`), and the phone is provisioned by that provisioner
  from then on, as if ``phone.provisioner_url`` named it; a later start
  finds the provisioner in the saved credential (:func:`saved_provisioner`).

A stick file is read once per insertion (same path, modification time and
size) and every refusal is logged with its code and shown, as
:mod:`.phone` does for a provisioned phone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from appliance.config import AppConfig
from appliance.errors import ProvisioningError
from appliance.provisioning import usb, wifi
from appliance.provisioning.credential import (
    StoredCredential,
    load_credential,
    save_credential,
)
from appliance.provisioning.phone import UsbSource, read_stick

__all__ = ["WAITING", "saved_provisioner", "usb_source", "wait_for_token_or_stick"]

logger = logging.getLogger(__name__)

#: The STATUS line and the OLED's message while waiting.
WAITING = "waiting for a token or a USB stick"


def saved_provisioner(credential_file: Path) -> str | None:
    """The provisioner of a credential a stick saved earlier, if any."""
    try:
        stored = load_credential(credential_file)
    except ProvisioningError as exc:
        logger.error("ignoring the device credential: %s", exc)
        return None
    return stored.provisioner if stored is not None else None


async def wait_for_token_or_stick(
    token_present: Callable[[], bool],
    stick: UsbSource | None,
    credential_file: Path,
    *,
    usb_result: Callable[[str, int | None], None],
) -> str | None:
    """Wait until the token file is there (``None``) or a stick enrolled
    this phone (the provisioner's URL, its credential saved).

    ``token_present`` and the stick are looked at every :data:`usb.POLL_S`
    seconds; ``usb_result`` shows what reading a stick did.
    """
    seen: tuple[int, int] | None = None
    while True:
        if token_present():
            return None
        if stick is not None:
            error: usb.UsbFileError | None = None
            try:
                found = await asyncio.to_thread(usb.stick_file, stick.directory)
            except usb.UsbFileError as exc:
                found, error = (-1, -1), exc
            if found is not None and found != seen:
                try:
                    if error is not None:
                        raise error
                    stored = await _apply(stick, credential_file)
                except usb.UsbFileError as exc:
                    logger.error(
                        "USB provisioning file refused (error %d): %s", exc.code, exc
                    )
                    usb_result(exc.short, exc.code)
                except ProvisioningError as exc:
                    logger.error("USB provisioning unavailable: %s", exc)
                    usb_result("Cannot save", exc.code)
                else:
                    usb_result(f"Provisioned as {stored.identity}", None)
                    return stored.provisioner
            seen = found
        await asyncio.sleep(usb.POLL_S)


async def _apply(stick: UsbSource, credential_file: Path) -> StoredCredential:
    """Read, verify and apply a stick's file; return what was saved.

    Raises:
        UsbFileError: the file was refused.
        ProvisioningError: no key to check it with, or it cannot be saved.
    """
    bundle = await read_stick(stick, None)
    if bundle.wifi is not None and stick.wifi_dir is not None:
        path = await asyncio.to_thread(wifi.write_network, stick.wifi_dir, bundle.wifi)
        logger.info("Wi-Fi %r from USB written to %s", bundle.wifi.ssid, path)
    stored = StoredCredential(
        bundle.credential,
        bundle.identity,
        bundle.provisioner_url.rstrip("/"),
        bundle.ca_pem,
        bundle.pin,
    )
    await asyncio.to_thread(save_credential, credential_file, stored)
    logger.info("enrolled from USB as %s at %s", bundle.identity, stored.provisioner)
    return stored


def usb_source(config: AppConfig) -> UsbSource | None:
    """Where sticks are mounted and the key their files are signed with
    (``phone.usb_dir``, ``phone.usb_public_key_file``); None without both."""
    if not (config.usb_dir and config.usb_public_key_file):
        return None
    # A stick's Wi-Fi goes beside the credential, for the image.
    wifi_dir = config.credential_file.parent
    return UsbSource(config.usb_dir, config.usb_public_key_file, wifi_dir=wifi_dir)
