"""The image's half of USB provisioning agrees with the phone's: the udev
rule starts the mount unit, which mounts read-only, nosuid, nodev, noexec
where the image's configuration tells the phone to look."""

from __future__ import annotations

import configparser
import re
import tomllib
from pathlib import Path

from appliance.provisioning.wifi import FILE_NAME

ROOTFS = Path(__file__).parents[2] / "image/rootfs"
SYSTEM = ROOTFS / "etc/systemd/system"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(SYSTEM / name)
    return parser


def test_a_stick_is_mounted_read_only_where_the_phone_looks():
    rule = (ROOTFS / "etc/udev/rules.d/90-appliance-usb.rules").read_text()
    wanted = re.search(r'SYSTEMD_WANTS}\+="([^"@]+)@%k\.service"', rule)
    assert wanted is not None and 'ACTION=="add"' in rule
    mount = unit(f"{wanted.group(1)}@.service")
    assert mount["Unit"]["BindsTo"] == "dev-%i.device"  # pulled = unmounted
    words = mount["Service"]["ExecStart"].split()
    options = set(words[words.index("-o") + 1].split(","))
    assert {"ro", "nosuid", "nodev", "noexec"} <= options
    target = words[-1]
    assert mount["Service"]["ExecStop"].split()[-1] == target
    # The image's appliance.toml names the same directory (a fresh phone
    # watches it for a stick that names its provisioner).
    text = (ROOTFS.parent / "appliance.toml").read_text()
    line = next(x for x in text.splitlines() if "usb_dir" in x)
    assert tomllib.loads(line.lstrip("# "))["usb_dir"] == target


def test_wifi_from_a_stick_reaches_the_file_the_phone_writes():
    path = unit("appliance-wifi.path")
    service = unit("appliance-wifi.service")
    watched = Path(path["Path"]["PathChanged"])
    assert watched.name == FILE_NAME
    assert watched.parent == Path("/var/lib/appliance")  # beside the credential
    script = ROOTFS / service["Service"]["ExecStart"].lstrip("/")
    assert str(watched) in script.read_text().replace("$root", "")
