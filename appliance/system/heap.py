"""Keep the garbage collector's full passes off the audio path.

CPython's cyclic collector stops the whole interpreter while it runs, and a
full (generation 2) pass visits every tracked object. After start-up the
phone holds some 75 000 of them (aiortc, PyAV, numpy, the config schema, its
own modules), and a full pass over them measured 40-200 ms on the 2-core
development box, far more on a Pi core. That is longer than the 40 ms of
audio the ALSA playback ring holds (hardware/alsa_pcm.py), so a full pass in
the middle of a call was an underrun: a gap in the far end's voice, a DTMF
feedback tone heard as two digits.

None of those start-up objects ever becomes garbage: modules, classes and
tables live as long as the process. :func:`freeze_startup_heap` collects once
and then moves everything that survived into the permanent generation
(``gc.freeze``, Python 3.7+), which no collection visits. Full passes then
cover only what was made since (calls, frames, sessions), a few thousand
objects. bench/gc_bench.py measures the pause before and after.

The service freezes once it is up (app.run_service), the test phones and the
demo likewise; later garbage is collected as usual.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["freeze_startup_heap"]

logger = logging.getLogger(__name__)


def freeze_startup_heap() -> int:
    """Collect once, then exempt every surviving object from later passes.

    Call it when start-up is done (imports, the Device, the panel). Calling it
    again later freezes what has been built since, which is harmless.

    Returns:
        How many objects are in the permanent generation now.
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.debug("start-up heap frozen: %d objects exempt from collection", frozen)
    return frozen
