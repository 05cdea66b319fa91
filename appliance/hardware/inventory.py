"""``appliance devices``: the sound devices a phone can use, with their ids.

The person setting up a phone needs the exact id to put in
``/etc/appliance/appliance.toml`` (``device.input_device`` and
``device.output_device``), and a USB headset's ALSA name is not guessable.
This prints ALSA's playback and capture PCMs as the firmware sees them
(:func:`~appliance.hardware.alsa_devices.list_pcm_devices`, the same listing
Device.audio uses), one ``id  label`` line each, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from appliance.errors import AudioDeviceError

if TYPE_CHECKING:
    # Imported when the command runs: the CLI starts without ALSA and numpy.
    from appliance.hardware.alsa_devices import AlsaDeviceInfo

__all__ = ["add_devices_parser", "format_devices", "run_devices"]

_Subparsers = Any  # argparse's _SubParsersAction is private

#: (direction, heading, the config key that takes such an id)
_SECTIONS = (
    ("output", "playback", "device.output_device"),
    ("input", "capture", "device.input_device"),
)


def add_devices_parser(subparsers: _Subparsers) -> None:
    """Add ``appliance devices``."""
    parser = subparsers.add_parser(
        "devices",
        help="list ALSA playback and capture devices with their ids",
        description="List the sound devices the phone can open: ids for "
        "device.output_device (playback) and device.input_device (capture).",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run_devices)


def format_devices(devices: list[AlsaDeviceInfo]) -> str:
    """The listing as text: a heading per direction, then ``id  label`` lines."""
    lines: list[str] = []
    for direction, heading, key in _SECTIONS:
        chosen = [d for d in devices if d.direction == direction]
        lines.append(f"{heading} ({key}):")
        if not chosen:
            lines.append("  (none)")
        width = max((len(d.id) for d in chosen), default=0)
        lines.extend(f"  {d.id:<{width}}  {d.label}" for d in chosen)
    return "\n".join(lines) + "\n"


def run_devices(args: argparse.Namespace) -> int:
    """Handler of ``appliance devices``: exit 1 when ALSA cannot be listed."""
    from appliance.hardware.alsa_devices import list_pcm_devices

    try:
        devices = list_pcm_devices()
    except AudioDeviceError as exc:
        sys.stderr.write(f"appliance: error: {exc.message} (the hardware extra)\n")
        return 1
    if args.json:
        listing = {
            heading: [
                {"id": d.id, "label": d.label} for d in devices if d.direction == kind
            ]
            for kind, heading, _key in _SECTIONS
        }
        sys.stdout.write(json.dumps(listing, indent=2) + "\n")
    else:
        sys.stdout.write(format_devices(devices))
    return 0
