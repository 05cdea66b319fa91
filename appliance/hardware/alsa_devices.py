"""ALSA device listing with human labels, and the card monitor (hot-plug).

ALSA has no portable change notification for PCM hints (a USB headset adds a
card, and its PCMs appear in ``aplay -L``), so :class:`CardMonitor` lists the
PCMs about once a second in a worker thread (``pcms()`` may take
milliseconds) and reports the difference. It is the one hot-plug mechanism of
the firmware: Device.audio receives it as its
:class:`~appliance.media.listing.DeviceMonitor` (anchors.md §5: baresip#2433
and pjsip#3132 crashed or went silent on unplug; the app must notice itself).

The ALSA backend is declared here too (:data:`BACKEND`): ``alsa:NAME`` ids
open :class:`~appliance.hardware.alsa_pcm.AlsaSource` and
:class:`~appliance.hardware.alsa_pcm.AlsaSink`, and the listing comes from a
:class:`CardMonitor`. The package metadata names it in the
``appliance.audio_backends`` entry-point group, which is how the media layer
finds a backend by the kind of a device id without importing hardware.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.errors import AudioDeviceError
from appliance.hardware.alsa_capture import open_alsa_source
from appliance.hardware.alsa_pcm import ID_PREFIX, open_alsa_sink, strip_prefix
from appliance.media.devices import AudioBackend
from appliance.media.listing import (
    ChangeCallback,
    DeviceChange,
    DeviceSetTracker,
    Direction,
    ListedDevice,
)

try:
    import alsaaudio
except ImportError:  # pragma: no cover - pyalsaaudio is the "hardware" extra
    alsaaudio = None

__all__ = [
    "BACKEND",
    "AlsaDeviceInfo",
    "CardMonitor",
    "list_pcm_devices",
    "pcm_label",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class AlsaDeviceInfo(ListedDevice):
    """One ALSA PCM usable for input or output (``id`` is ``alsa:NAME``)."""

    @property
    def pcm_name(self) -> str:
        """The ALSA PCM name (the id without ``alsa:``)."""
        return strip_prefix(self.id)


#: Plugin helpers that alsa-plugins registers as PCMs but that are not devices.
_HIDDEN = frozenset(
    {
        "null",
        "lavrate",
        "samplerate",
        "speexrate",
        "speex",
        "jack",
        "oss",
        "upmix",
        "vdownmix",
        "a52",
    }
)
_HIDDEN_PREFIXES = ("surround", "iec958", "usbstream", "a52:", "vdownmix:", "upmix:")
_KIND_LABELS = {
    "default": "",
    "sysdefault": "",
    "plughw": "",
    "hw": "direct",
    "front": "front",
    "dmix": "shared",
    "dsnoop": "shared",
    "hdmi": "HDMI",
}


def pcm_label(name: str, cards: dict[str, str]) -> str:
    """Return a human label for a PCM hint name.

    ``plughw:CARD=Headset,DEV=1`` with ``cards={"Headset": "USB Headset"}``
    gives ``"USB Headset, device 1"``; names without a card stay as they are.

    Args:
        name: the ALSA PCM name.
        cards: card id to card name.
    """
    kind, _, args = name.partition(":")
    params = dict(part.split("=", 1) for part in args.split(",") if "=" in part)
    card = params.get("CARD")
    if card is None:
        return name
    parts = [cards.get(card, card)]
    if params.get("DEV", "0") != "0":
        parts.append(f"device {params['DEV']}")
    extra = _KIND_LABELS.get(kind, kind)
    if extra:
        parts.append(extra)
    return ", ".join(parts)


def list_pcm_devices() -> list[AlsaDeviceInfo]:
    """List ALSA capture and playback PCMs with human labels.

    Names come from ALSA's device hints (``alsaaudio.pcms()``, like
    ``aplay -L``); labels use the card names (``alsaaudio.card_name()``).

    Raises:
        AudioDeviceError: pyalsaaudio is not installed.
    """
    if alsaaudio is None:
        raise AudioDeviceError(message="pyalsaaudio is not installed")
    # Hints name cards by id (CARD=Headset); card_name() gives the human
    # (short name, long name) by index; cards() and card_indexes() share the
    # enumeration order.
    cards: dict[str, str] = {}
    for card_id, index in zip(
        alsaaudio.cards(), alsaaudio.card_indexes(), strict=False
    ):
        try:
            short_name = alsaaudio.card_name(index)[0]
        except alsaaudio.ALSAAudioError:
            short_name = card_id
        cards[str(card_id)] = str(short_name or card_id)
    out: list[AlsaDeviceInfo] = []
    seen: set[tuple[str, str]] = set()
    directions: tuple[tuple[Direction, Any], ...] = (
        ("input", alsaaudio.PCM_CAPTURE),
        ("output", alsaaudio.PCM_PLAYBACK),
    )
    for direction, pcm_type in directions:
        for name in alsaaudio.pcms(pcm_type):
            if name in _HIDDEN or name.startswith(_HIDDEN_PREFIXES):
                continue
            if (name, direction) in seen:
                continue
            seen.add((name, direction))
            out.append(
                AlsaDeviceInfo(ID_PREFIX + name, pcm_label(name, cards), direction)
            )
    return out


class CardMonitor:
    """Poll the ALSA device list and report hot-plugged cards.

    A :class:`~appliance.media.listing.DeviceMonitor`. A listing that fails
    (no pyalsaaudio, no ALSA configuration) counts as empty: the phone then
    has its virtual devices only, said once at INFO.

    Args:
        interval_s: poll period.
        lister: the listing function (default :func:`list_pcm_devices`).

    Example::

        monitor = CardMonitor()
        monitor.start(lambda change: print(change.added_ids))
        ...
        await monitor.stop()
    """

    def __init__(
        self,
        *,
        interval_s: float = 1.0,
        lister: Callable[[], Sequence[ListedDevice]] = list_pcm_devices,
    ) -> None:
        self.interval_s = interval_s
        self._lister = lister
        self._on_change: ChangeCallback | None = None
        self._task: asyncio.Task[None] | None = None
        self._tracker: DeviceSetTracker | None = None
        self._unlisted = False

    @property
    def devices(self) -> list[ListedDevice] | None:
        """The latest listing; None until the first poll."""
        return None if self._tracker is None else self._tracker.devices

    async def poll(self) -> DeviceChange | None:
        """List devices once; report and return the change (None at first)."""
        try:
            devices = list(await asyncio.to_thread(self._lister))
        except (AudioDeviceError, OSError) as exc:
            if not self._unlisted:
                self._unlisted = True
                logger.info("no ALSA device listing (%s); virtual devices only", exc)
            devices = []
        if self._tracker is None:
            self._tracker = DeviceSetTracker(devices)
            return None
        change = self._tracker.update(devices)
        if change is not None:
            logger.info(
                "audio devices changed: added %s, removed %s",
                sorted(change.added_ids),
                sorted(change.removed_ids),
            )
            if self._on_change is not None:
                self._on_change(change)
        return change

    async def _run(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception:  # supervision boundary of the polling task
                logger.exception("card monitor poll failed")
            await asyncio.sleep(self.interval_s)

    def start(self, on_change: ChangeCallback) -> None:
        """Poll in a task of the running loop; ``on_change`` gets each change."""
        self._on_change = on_change
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="alsa-card-monitor"
            )

    async def stop(self) -> None:
        """Stop polling."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


#: ``alsa:NAME`` devices (``appliance.audio_backends`` entry point ``alsa``).
BACKEND = AudioBackend("alsa", open_alsa_source, open_alsa_sink, monitor=CardMonitor)
