"""Wi-Fi from a USB file: the phone's network block, and the image's
``appliance-wifi`` script (run for real, below a directory root) that
installs it for wpa_supplicant and refuses anything else."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from appliance.errors import ProvisioningError
from appliance.provisioning.wifi import (
    FILE_NAME,
    WifiNetwork,
    derive_psk,
    parse_wifi,
    write_network,
)

SCRIPT = Path(__file__).parents[2] / "image/rootfs/usr/local/sbin/appliance-wifi"
PSK = derive_psk("Office", "correct horse battery")


def install(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SCRIPT)],
        env={"APPLIANCE_ROOT": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_psk_is_the_ieee_802_11i_one():
    # IEEE 802.11i-2004, H.4.3, test vector 1.
    assert derive_psk("IEEE", "password") == (
        "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    )
    with pytest.raises(ProvisioningError):
        derive_psk("Office", "short")
    with pytest.raises(ProvisioningError):
        derive_psk("x" * 33, "long enough")


@pytest.mark.parametrize(
    "value",
    [
        {"ssid": "Office"},
        {"ssid": "", "psk": PSK},
        {"ssid": "Office", "psk": "secret"},
        {"ssid": "Office", "psk": PSK, "priority": 5},
        {"ssid": 'a"\nb', "psk": PSK.upper()},
        ["Office", PSK],
    ],
)
def test_bad_wifi_objects_are_refused(value: object):
    with pytest.raises(ProvisioningError):
        parse_wifi(value)


def test_the_image_installs_the_phone_s_network_block(tmp_path: Path):
    state = tmp_path / "var/lib/appliance"
    target = tmp_path / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
    target.parent.mkdir(parents=True)
    target.write_text("ctrl_interface=DIR=/run/wpa_supplicant\ncountry=GB\n")
    # Quotes and a newline in an SSID cannot break out: it is written in hex.
    ssid = 'Guest"\n}'
    path = write_network(state, parse_wifi({"ssid": ssid, "psk": PSK}))
    assert path == state / FILE_NAME and path.stat().st_mode & 0o777 == 0o600
    result = install(tmp_path)
    assert result.returncode == 0, result.stderr
    text = target.read_text()
    assert text.startswith("ctrl_interface=DIR=/run/wpa_supplicant\n")
    assert "country=GB\n" in text
    assert f"\tssid={ssid.encode().hex()}\n\tkey_mgmt=WPA-PSK\n\tpsk={PSK}\n" in text
    assert target.stat().st_mode & 0o777 == 0o600
    assert not list(target.parent.glob("*.conf.*"))  # no temporary file left

    # Anything but the phone's own lines is refused; the settings stay.
    path.write_text(
        path.read_text() + "pkcs11_module_path=/media/appliance-usb/evil.so\n"
    )
    result = install(tmp_path)
    assert result.returncode == 1 and "refusing" in result.stderr
    assert target.read_text() == text


def test_a_network_repr_hides_the_psk():
    assert PSK not in repr(WifiNetwork("Office", PSK))
