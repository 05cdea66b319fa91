"""The sounds of a call: the ring, the answer and hang-up chimes, key clicks.

The Device asks for these through its :class:`~appliance.phone.ports.CallAudio`
port (Device.audio implements it by delegating here):

* ``ring(call)`` starts ``incoming`` on the ringtone devices and returns once
  it plays, or after :data:`RING_START_TIMEOUT_S` at the latest, because the
  Device emits ``incoming`` only then (signaling-protocol.md §7,
  ``RINGTONE_PLAY_TIMEOUT``).
* ``call_opened`` stops the ring and plays ``outgoing`` for an outgoing call;
  ``call_ended`` plays ``disconnect``, but only for a call that was answered,
  not a cancelled, rejected or ignored one (signaling-protocol.md §7).
* ``play_dtmf`` is the local key feedback of the front panel.

Each of ``incoming``, ``outgoing`` and ``disconnect`` can be switched off (the
seed's ``device.audio.incoming(False)`` and friends).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from appliance.audio.collection import Role
from appliance.audio.mixer import Playback
from appliance.audio.outputs import OutputRouter
from appliance.audio.soundbank import SoundBank
from appliance.audio.sounds import digit_sound_name
from appliance.errors import InvalidArgumentError
from appliance.tasks import TaskSet, wait_event

__all__ = ["RING_START_TIMEOUT_S", "Ringer"]

logger = logging.getLogger(__name__)

#: signaling-protocol.md §7 (``RINGTONE_PLAY_TIMEOUT``): ``incoming`` is emitted
#: once the ring plays, or after this long at the latest.
RING_START_TIMEOUT_S = 2.0


class Ringer:
    """Call-lifecycle sounds (see the module docstring).

    Args:
        outputs: where sounds play.
        sounds: which sound plays for a name.
    """

    def __init__(self, outputs: OutputRouter, sounds: SoundBank) -> None:
        self._outputs = outputs
        self._sounds = sounds
        self._flags = {"incoming": True, "outgoing": True, "disconnect": True}
        self._rings: dict[int, Playback] = {}
        self._opened_calls: set[int] = set()
        self._tasks = TaskSet(logger, "call sound")

    def flag(self, name: str, enabled: bool | None) -> bool:
        """Get, or set and get, whether the sound ``name`` plays.

        Raises:
            InvalidArgumentError: ``enabled`` is not a bool.
        """
        if enabled is not None:
            if not isinstance(enabled, bool):
                raise InvalidArgumentError(name, "must be true or false")
            self._flags[name] = enabled
        return self._flags[name]

    async def ring(
        self,
        call: object,
        *,
        ring: bool = True,
        wanted: Callable[[], bool] = lambda: True,
    ) -> None:
        """Start the ring for ``call``; return once it plays, or after 2 s.

        ``wanted`` is asked again after the (possibly downloaded) sound is
        ready: a caller who gave up meanwhile must not leave a ring looping.
        """
        if not ring or not self._flags["incoming"]:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RING_START_TIMEOUT_S
        try:
            async with asyncio.timeout(RING_START_TIMEOUT_S):
                sound = await self._sounds.sound("incoming")
        except TimeoutError:
            sound = self._sounds.default("incoming")
        if id(call) in self._rings or not wanted():
            return
        playback = self._outputs.play(sound, "ringtone")
        self._rings[id(call)] = playback
        await wait_event(playback.started, max(0.0, deadline - loop.time()))

    def stop_ring(self, call: object) -> None:
        """Stop the ring of ``call``, if it rings."""
        playback = self._rings.pop(id(call), None)
        if playback is not None:
            playback.stop()

    def call_opened(self, call: object, *, outgoing: bool) -> None:
        """The call was answered: ring off, ``outgoing`` for an outgoing call."""
        self.stop_ring(call)
        self._opened_calls.add(id(call))
        if outgoing and self._flags["outgoing"]:
            self._tasks.spawn(self.play_named("outgoing"), "sound-outgoing")

    def call_ended(self, call: object) -> None:
        """The call ended: ring off, ``disconnect`` if it had been answered."""
        self.stop_ring(call)
        if id(call) in self._opened_calls:
            self._opened_calls.discard(id(call))
            if self._flags["disconnect"]:
                self._tasks.spawn(self.play_named("disconnect"), "sound-disconnect")

    def play_dtmf(self, digit: str) -> Playback:
        """Local key feedback for ``digit`` on the speaker devices.

        Uses the custom ``dtmfN`` sound if one is loaded, else the fake pair
        with ``fake_local_dtmf`` or the Q.23 pair.

        Raises:
            InvalidArgumentError: not 0-9, * or #.
        """
        try:
            name = digit_sound_name(digit)
        except KeyError:
            raise InvalidArgumentError(
                "digit", f"not a keypad digit: {digit!r}"
            ) from None
        return self._outputs.play(self._sounds.ready_sound(name), "speaker")

    async def play_named(self, name: str, role: Role = "speaker") -> Playback:
        """Play the seed's sound ``name`` (custom or default) on ``role``."""
        return self._outputs.play(await self._sounds.sound(name), role)

    async def close(self) -> None:
        """Forget every ring and stop the sounds being started."""
        await self._tasks.close()
        self._rings.clear()
        self._opened_calls.clear()
