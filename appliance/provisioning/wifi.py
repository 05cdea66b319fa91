"""Wi-Fi settings from a USB provisioning file, written for the image's network stack.

The image runs systemd-networkd with ``wpa_supplicant@wlan0``, which reads
``/etc/wpa_supplicant/wpa_supplicant-wlan0.conf`` (``/data/wifi`` on the
read-only image). The phone service does not write that file itself: a
wpa_supplicant configuration can name libraries for wpa_supplicant (root)
to load, so a service that could write it could become root. The phone
writes only a network block, built here from checked values, into its own
state directory (:data:`FILE_NAME`, 0600, atomically); the image's
``appliance-wifi.path`` unit notices it and ``appliance-wifi`` (root, from
the image, not from the stick) checks it line by line, installs it for
wpa_supplicant and restarts it. Nothing from the stick is run and no value
from it reaches the file unchecked: the SSID is written in hex and the
PSK is 64 hex digits (``make-usb`` derives it from the passphrase as
``wpa_passphrase`` does: PBKDF2-HMAC-SHA1, the SSID as salt, 4096 rounds,
IEEE 802.11i), so no quoting or escaping is involved.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ProvisioningError
from appliance.files import write_atomic

__all__ = [
    "FILE_NAME",
    "WifiNetwork",
    "derive_psk",
    "parse_wifi",
    "render",
    "write_network",
]

#: The network block in the phone's state directory.
FILE_NAME = "wifi-wlan0.conf"
_PSK_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class WifiNetwork:
    """One WPA-PSK network; the repr hides the PSK."""

    ssid: str
    psk: str

    def __repr__(self) -> str:
        return f"WifiNetwork(ssid={self.ssid!r}, psk='********')"


def derive_psk(ssid: str, passphrase: str) -> str:
    """The WPA PSK (64 hex digits) of a passphrase of 8 to 63 ASCII characters.

    Raises:
        ProvisioningError: the SSID or passphrase is not valid for WPA-PSK.
    """
    _check_ssid(ssid)
    if not 8 <= len(passphrase) <= 63 or not all(" " <= c <= "~" for c in passphrase):
        raise ProvisioningError("a Wi-Fi passphrase is 8 to 63 printable ASCII")
    key = hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32)
    return key.hex()


def parse_wifi(value: object) -> WifiNetwork:
    """Check a USB file's ``wifi`` object.

    Raises:
        ProvisioningError: not ``{"ssid": 1-32 bytes, "psk": 64 hex}``.
    """
    if not isinstance(value, dict) or set(value) != {"ssid", "psk"}:
        raise ProvisioningError('wifi must be {"ssid", "psk"}')
    ssid, psk = value["ssid"], value["psk"]
    if not isinstance(ssid, str) or not isinstance(psk, str):
        raise ProvisioningError("wifi ssid and psk must be text")
    _check_ssid(ssid)
    if not _PSK_RE.fullmatch(psk):
        raise ProvisioningError("wifi psk must be 64 lower-case hex digits")
    return WifiNetwork(ssid, psk)


def render(network: WifiNetwork) -> bytes:
    """The network block, every value in hex."""
    return (
        "# From a signed USB provisioning file; installed by appliance-wifi.\n"
        "network={\n"
        f"\tssid={network.ssid.encode().hex()}\n"
        "\tkey_mgmt=WPA-PSK\n"
        f"\tpsk={network.psk}\n"
        "}\n"
    ).encode()


def write_network(directory: Path, network: WifiNetwork) -> Path:
    """Write the network block into ``directory`` (atomically, 0600).

    Raises:
        ProvisioningError: it could not be written (the old one is kept).
    """
    path = directory / FILE_NAME
    try:
        write_atomic(path, render(network))
    except OSError as exc:
        raise ProvisioningError(f"cannot write {path}: {exc.strerror}") from exc
    return path


def _check_ssid(ssid: str) -> None:
    if not 1 <= len(ssid.encode()) <= 32:
        raise ProvisioningError("a Wi-Fi SSID is 1 to 32 bytes")
