"""The SD-card image: a read-only root, and every place the service writes on /data.

The image mounts ``/`` read-only so that power can be pulled at any time; what
the phone changes must therefore come from the ``data`` partition. The unit
names those places (``ReadWritePaths=``, ``StateDirectory=``,
``ConfigurationDirectory=``); here each must be bind-mounted from ``/data`` by
the image's fstab, and seeded there by the build's customize hook. Building
the image takes an hour (``make image``), so this checks the recipe's files.
"""

from __future__ import annotations

from pathlib import Path

from appliance_dev.unit_file import unit_settings

IMAGE = Path(__file__).resolve().parents[1] / "image"


def fstab() -> dict[str, tuple[str, str, str]]:
    """Mount point -> (source, type, options) of the image's fstab."""
    mounts = {}
    for line in (IMAGE / "rootfs/etc/fstab").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 4 and not fields[0].startswith("#"):
            mounts[fields[1]] = (fields[0], fields[2], fields[3])
    return mounts


def written_by_the_service() -> list[str]:
    s = unit_settings()
    paths = [p for value in s.get("ReadWritePaths", []) for p in value.split()]
    paths += [f"/var/lib/{d}" for d in s.get("StateDirectory", [])]
    paths += [f"/etc/{d}" for d in s.get("ConfigurationDirectory", [])]
    return paths


def test_the_root_is_read_only_and_data_is_writable() -> None:
    mounts = fstab()
    assert "ro" in mounts["/"][2].split(",")
    assert "rw" in mounts["/data"][2].split(",")


def test_every_place_the_service_writes_comes_from_data() -> None:
    mounts = fstab()
    customize = (IMAGE / "customize").read_text()
    places = written_by_the_service()
    assert "/opt/appliance" in places  # the updater's releases and links
    for place in places:
        source, kind, options = mounts[place]
        assert kind == "none" and "bind" in options.split(","), place
        assert source.startswith("/data/"), place
        assert "x-systemd.requires-mounts-for=/data" in options, place
        # The build copies what the installer put there onto the data partition.
        seeded = source.replace("/data/", '"$data/', 1)
        assert f'"$root{place}/." {seeded}/"' in customize, place
