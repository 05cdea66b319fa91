"""The receive jitter buffer: packets in as they arrive, one frame out per 20 ms.

Sans-I/O: :class:`JitterBuffer` is given each RTP packet with its arrival
time (:meth:`JitterBuffer.push`) and asked for the frame to play at each tick
of the playout clock (:meth:`JitterBuffer.pop`); it never reads a clock and
never decodes. ``appliance.media.playout`` drives it on a call.

Why not aiortc's buffer: aiortc releases frames when packets *arrive*, so it
smooths nothing; it waits for up to 16 packets (about 320 ms) on a missing
one, and after a hole it releases one frame per arriving packet, so each loss
adds delay for the rest of the call (anchors.md §6, aiortc#543). Under 5 %
loss the delay grew by tens of milliseconds a minute.

The model (each packet carries 20 ms, as WebRTC sends; frame ``i`` is the
packet with extended sequence number ``i``):

* **Lateness.** A packet's *transit* is its arrival time minus ``i * 20 ms``
  (its send time up to a constant offset, as in RFC 3550 §6.4.1, where the
  RTP timestamp plays that part). The smallest transit of the last
  ``window_s`` seconds is the path's fixed delay; a packet's *lateness* is its
  transit above that. The RFC 3550 interarrival jitter (the smoothed
  difference of successive transits, gain 1/16) is kept too, for reporting.
* **Target delay.** The buffer delays playout so that a chosen quantile (0.95)
  of the recent latenesses still arrives in time, as WebRTC's NetEQ does,
  bounded to ``min_delay_s..max_delay_s`` (20..120 ms: ITU-T G.114 App. II
  gives both terminals together 80 ms with 20 ms packets and PLC).
* **Playout delay.** When frame ``p`` plays at ``now``, the buffer's delay is
  ``now - (base + p * 20 ms)``: how long after its earliest possible arrival
  the frame is heard. Below the target by half a frame, the buffer *stretches*:
  it plays one concealment frame without advancing (the decoder's
  loss concealment makes it sound like the frame before). Above the target by
  a frame it *compresses*: it skips one frame, at once if that frame is quiet
  (the sender said so, see :meth:`push`), otherwise at most one in
  ``drop_every`` frames, so speech is time-compressed gently; above the bound
  it skips without waiting. So after a burst of jitter the window forgets the
  late packets and the delay shrinks back within a few seconds.
* **Loss.** A frame not there when due is played as a loss: from the next
  packet's in-band FEC when that packet is already here and the codec has it
  (Opus, RFC 6716 §2.1.7 and §4.2.1: the SILK layer of packet ``i + 1`` may
  carry a coarser copy of frame ``i``), otherwise by concealment (Opus PLC,
  RFC 6716 §4.4; for G.711, the adapter repeats the last frame fading out).
  A packet arriving after its frame was played is discarded, but its
  lateness still counts, which is how the target grows under jitter. While
  more than 1 % of recent frames were lost and the codec has FEC, the target
  holds one frame more, so that the packet after a loss is usually there
  (NetEQ likewise adds delay per percent of loss).
* **Resynchronisation.** A packet whose transit differs from the path's by
  more than ``resync_s`` (the far side paused, or restarted its stream), or
  the tenth late packet in a row (a shorter pause), restarts the buffer from
  that packet.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["FrameKind", "JitterBuffer", "JitterStats", "Playout"]

_SEQ_MOD = 1 << 16
# Frames over which the loss rate is smoothed, and the rate above which the
# buffer waits one more frame so that a lost frame's successor is at hand.
_LOSS_MEMORY = 100
_FEC_LOSS = 0.01
# Packets in a row that come too late to play: the stream has fallen behind.
_LATE_RUN = 10
# The target's quantile is taken again after this many packets (100 ms), not
# on every frame: over a 2 s window it barely moves in between, and taking it
# 50 times a second was a fifth of the event loop's CPU time under a quota.
_MEASURE_EVERY = 5


class FrameKind(enum.Enum):
    """What the decoder is to make of a tick."""

    AUDIO = "audio"  #: decode ``payload``, the frame itself
    FEC = "fec"  #: decode the FEC data of ``payload``, the *next* packet
    CONCEAL = "conceal"  #: nothing to decode: conceal (PLC, fade, silence)


@dataclass(frozen=True)
class Playout:
    """One tick's frame.

    Attributes:
        kind: see :class:`FrameKind`.
        payload: the RTP payload to decode (None for CONCEAL).
        concealed_run: consecutive CONCEAL frames up to and including this
            one (0 for AUDIO and FEC), for fading out a long loss.
    """

    kind: FrameKind
    payload: bytes | None = None
    concealed_run: int = 0


@dataclass(frozen=True)
class JitterStats:
    """What the buffer has done so far (counts of frames)."""

    received: int
    late: int
    played: int
    recovered: int
    concealed: int
    stretched: int
    dropped: int
    resyncs: int


class JitterBuffer:
    """Adaptive playout buffer for one RTP audio stream of 20 ms packets.

    Args:
        frame_s: the duration of one packet.
        min_delay_s: the smallest target delay (covers the tick's phase).
        max_delay_s: the largest target delay; the delay is held near it.
        start_delay_s: the target before any lateness has been measured.
        window_s: how long a lateness is remembered.
        quantile: the share of recent packets that must arrive in time.
        drop_every: at most one frame of speech skipped in this many.
        fec: whether the codec carries in-band FEC (Opus).
        capacity: frames held at most; older ones are dropped.
        resync_s: a transit jump beyond which the buffer restarts.
    """

    def __init__(
        self,
        *,
        frame_s: float = 0.020,
        min_delay_s: float = 0.020,
        max_delay_s: float = 0.120,
        start_delay_s: float = 0.020,
        window_s: float = 2.0,
        quantile: float = 0.95,
        drop_every: int = 5,
        fec: bool = False,
        capacity: int = 50,
        resync_s: float = 1.0,
    ) -> None:
        if not 0 < min_delay_s <= start_delay_s <= max_delay_s:
            raise ValueError("need 0 < min_delay_s <= start_delay_s <= max_delay_s")
        self.frame_s = frame_s
        self.min_delay_s = min_delay_s
        self.max_delay_s = max_delay_s
        self.fec = fec
        self._start_delay = start_delay_s
        self._window = window_s
        self._quantile = quantile
        self._drop_every = drop_every
        self._capacity = capacity
        self._resync = resync_s
        self._frames: dict[int, tuple[bytes, bool]] = {}
        self._history: deque[tuple[float, float]] = deque()  # (arrival, transit)
        self._highest: int | None = None  # extended sequence number
        self._next: int | None = None  # the frame to play next; None: buffering
        self._first_arrival = 0.0
        self._last_transit: float | None = None
        self._jitter = 0.0
        self._target = start_delay_s
        self._lateness: float | None = None  # the quantile last taken
        self._unmeasured = 0  # packets pushed since
        self._since_drop = 0
        self._run = 0
        self._loss = 0.0  # recent share of frames lost, smoothed
        self._late_run = 0
        self._counts = dict.fromkeys(JitterStats.__dataclass_fields__, 0)

    # -- input --------------------------------------------------------------

    def push(
        self, sequence: int, payload: bytes, arrival: float, *, quiet: bool = False
    ) -> None:
        """Add the packet ``sequence`` (16 bits) received at ``arrival`` seconds.

        ``quiet`` marks a frame that may be skipped unheard (silence or
        comfort noise), where the buffer prefers to shrink.
        """
        self._counts["received"] += 1
        index = self._extend(sequence)
        transit = arrival - index * self.frame_s
        if self._history and abs(transit - self._base()) > self._resync:
            self._restart()
            index = self._extend(sequence)
        if self._last_transit is not None:
            # RFC 3550 §6.4.1: J += (|D| - J) / 16.
            self._jitter += (abs(transit - self._last_transit) - self._jitter) / 16
        self._last_transit = transit
        self._history.append((arrival, transit))
        self._unmeasured += 1
        while self._history and self._history[0][0] < arrival - self._window:
            self._history.popleft()
        if not self._frames and self._next is None:
            self._first_arrival = arrival
        if self._next is not None and index < self._next:
            self._counts["late"] += 1
            self._late_run += 1
            if self._late_run >= _LATE_RUN:
                # The stream fell behind for good (a pause shorter than
                # resync_s): start again from this packet.
                self._restart()
                self.push(sequence, payload, arrival, quiet=quiet)
            return
        self._late_run = 0
        self._frames.setdefault(index, (payload, quiet))
        if len(self._frames) > self._capacity:
            oldest = min(self._frames)
            del self._frames[oldest]
            self._counts["dropped"] += 1
            if self._next is not None:
                self._next = max(self._next, oldest + 1)

    def _extend(self, sequence: int) -> int:
        if self._highest is None:
            self._highest = sequence
            return sequence
        delta = (sequence - self._highest) % _SEQ_MOD
        if delta >= _SEQ_MOD // 2:
            delta -= _SEQ_MOD
        index = self._highest + delta
        self._highest = max(self._highest, index)
        return index

    def _restart(self) -> None:
        self._counts["resyncs"] += 1
        self._frames.clear()
        self._history.clear()
        self._highest = None
        self._next = None
        self._last_transit = None
        self._target = self._start_delay
        self._lateness = None
        self._unmeasured = 0
        self._run = 0
        self._late_run = 0

    # -- output -------------------------------------------------------------

    def pop(self, now: float) -> Playout | None:
        """Return the frame to play at ``now``; None while still filling up."""
        if self._next is None:
            if not self._frames or now < self._first_arrival + self._target:
                return None
            self._next = min(self._frames)
        self._target = self._measure_target()
        delay = self.delay(now)
        assert delay is not None
        self._since_drop += 1
        if delay > self._target + self.frame_s:
            entry = self._frames.get(self._next)
            quiet = entry is not None and entry[1]
            if (
                quiet
                or self._since_drop >= self._drop_every
                or delay > self.max_delay_s + self.frame_s
            ):
                self._frames.pop(self._next, None)
                self._next += 1
                self._since_drop = 0
                self._counts["dropped"] += 1
        elif delay < self._target - self.frame_s / 2 and self._next not in self._frames:
            # Stretch while the frame is not there yet: play a concealment
            # frame and keep waiting for it.
            self._counts["stretched"] += 1
            return self._conceal()
        index = self._next
        self._next += 1
        entry = self._frames.pop(index, None)
        self._loss += ((entry is None) - self._loss) / _LOSS_MEMORY
        if entry is not None:
            self._run = 0
            self._counts["played"] += 1
            return Playout(FrameKind.AUDIO, entry[0])
        following = self._frames.get(index + 1)
        if self.fec and following is not None:
            self._run = 0
            self._counts["recovered"] += 1
            return Playout(FrameKind.FEC, following[0])
        self._counts["concealed"] += 1
        return self._conceal()

    def _conceal(self) -> Playout:
        self._run += 1
        return Playout(FrameKind.CONCEAL, None, self._run)

    # -- readings -----------------------------------------------------------

    def _base(self) -> float:
        return min(transit for _, transit in self._history)

    def _measure_target(self) -> float:
        if len(self._history) < 2:
            return self._target
        if self._lateness is None or self._unmeasured >= _MEASURE_EVERY:
            transits = np.fromiter((t for _, t in self._history), dtype=np.float64)
            quantile = np.quantile(transits - transits.min(), self._quantile)
            self._lateness = float(quantile)
            self._unmeasured = 0
        lateness = self._lateness
        if self.fec and self._loss > _FEC_LOSS:
            lateness += self.frame_s  # hold the next packet too, for its FEC
        return min(max(lateness, self.min_delay_s), self.max_delay_s)

    def delay(self, now: float) -> float | None:
        """The delay of the frame due at ``now`` past its earliest arrival."""
        if self._next is None or not self._history:
            return None
        return now - (self._base() + self._next * self.frame_s)

    @property
    def target_delay(self) -> float:
        """The delay the buffer currently aims at, in seconds."""
        return self._target

    @property
    def jitter(self) -> float:
        """RFC 3550 interarrival jitter of the stream, in seconds."""
        return self._jitter

    @property
    def buffered(self) -> int:
        """Frames held, waiting to play."""
        return len(self._frames)

    def stats(self) -> JitterStats:
        """Counters of what the buffer did so far."""
        return JitterStats(**self._counts)
