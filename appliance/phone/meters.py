"""The periodic work of a call whose media runs: volume and quality events.

Why a module of its own: :class:`~appliance.phone.connection.Connection`
handles a call's signaling and state; these two loops only read its media and
report, at Twilio.Device's pace: ``volume(input, output)`` every 50 ms, and a
stats sample every second for the pure
:class:`~appliance.phone.quality.QualityMonitor` (``warning`` and
``warning-cleared``). Both run while ``media()`` returns a session: while the
call is open, and on through a signaling reconnect, since media flows then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appliance.errors import MediaError, NegotiationError
from appliance.phone.quality import QualityMonitor, Sample, loss_percent, mos

if TYPE_CHECKING:
    from appliance.media.session import MediaSession

__all__ = ["STATS_INTERVAL_S", "VOLUME_INTERVAL_S", "emit_volume", "sample_quality"]

VOLUME_INTERVAL_S = 0.050  # the SDK's volume event period
STATS_INTERVAL_S = 1.0  # the SDK's stats sample period

MediaGetter = Callable[[], "MediaSession | None"]


async def emit_volume(media: MediaGetter, emit: Callable[..., None]) -> None:
    """Emit ``volume(input, output)`` every 50 ms while there is media."""
    while (session := media()) is not None:
        emit("volume", session.input_level, session.output_level)
        await asyncio.sleep(VOLUME_INTERVAL_S)


async def sample_quality(
    media: MediaGetter,
    emit: Callable[..., None],
    on_sample: Callable[[float, float, float], None],
    log: logging.LoggerAdapter[Any],
) -> None:
    """Sample stats every second; emit quality warnings.

    ``on_sample(mos, jitter_s, loss_percent)`` gets each second's MOS and
    jitter and the loss over the whole call so far (kept for the call log).
    The first sample with packets in it is logged (INFO), once per call: the
    journal then says that the far end's media arrived and what it scored,
    and a call without that line received none.
    """
    monitor = QualityMonitor()
    received = lost = 0
    measured = False
    while True:
        await asyncio.sleep(STATS_INTERVAL_S)
        session = media()
        if session is None:
            return
        try:
            stats = await session.stats()
        except (MediaError, NegotiationError) as exc:
            log.debug("stats unavailable: %s", exc)
            continue
        sample = Sample(
            rtt_s=stats.rtt_s,
            jitter_s=stats.jitter_s,
            packets_received=max(0, stats.packets_received - received),
            packets_lost=max(0, stats.packets_lost - lost),
        )
        received, lost = stats.packets_received, stats.packets_lost
        score = mos(sample)
        on_sample(score, stats.jitter_s, loss_percent(received, lost))
        if not measured and received > 0:
            measured = True
            log.info(
                "media measured: MOS %.2f, jitter %.1f ms, %d packets received",
                score,
                1000.0 * stats.jitter_s,
                received,
            )
        for change in monitor.add(sample):
            if change.raised:
                emit(
                    "warning", change.name, {"name": change.name, "value": change.value}
                )
            else:
                emit("warning-cleared", change.name)
