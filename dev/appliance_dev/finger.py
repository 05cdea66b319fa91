"""``python -m appliance_dev.finger --config FILE``: the phone service with a
finger on its front panel.

It runs :func:`appliance.app.run_service` as ``appliance run`` does, with
``ui.pin_factory = "mock"``, and reads commands from standard input so a
test in another process can use the panel of a real service: ``press NAME``
and ``release NAME`` close and open a button's mock pin (or a keypad key's,
when NAME is one character such as ``#``), ``tap NAME`` does
both as a finger would (the event travels the real input path: pin edge,
debouncer, queue, Panel; a press and release closer than the debounce time
is a bounce and nothing at all). ``look NAME`` prints
``led NAME: lit=0|1 since=0|1`` for the ``ringer`` or ``status`` LED: lit
now, and lit at any moment since the last look (or the start), read from the
mock pin's recorded changes. Every new screen is
printed to standard output as ``screen: NAME``; ``panel: ready`` once the
panel is up. End of input lifts every finger; SIGTERM stops the service.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

from appliance.app import FrontPanel, run_service
from appliance.config import load_config
from appliance.log import configure_logging


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def _fingers(front: FrontPanel) -> None:
    assert front.mock is not None, 'finger needs ui.pin_factory = "mock"'
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    pressed: set[str] = set()
    while line := (await reader.readline()).decode().split():
        verb, name = [*line, ""][:2]
        key = len(name) == 1  # a keypad key ("0"-"9", "*", "#"), else a button
        if verb == "press":
            (front.mock.press_key if key else front.mock.press_button)(name)
            pressed.add(name)
        elif verb == "release":
            (front.mock.release_key if key else front.mock.release_button)(name)
            pressed.discard(name)
        elif verb == "tap":
            await (front.mock.tap_key if key else front.mock.tap_button)(name)
        elif verb == "look":
            pin = front.mock.pin(name)
            since = any(change.state for change in pin.states)
            pin.clear_states()
            _say(f"led {name}: lit={int(bool(pin.state))} since={int(since)}")
    for name in pressed:
        (front.mock.release_key if len(name) == 1 else front.mock.release_button)(name)


async def _main(config: Any) -> int:
    tasks: set[asyncio.Task[None]] = set()
    shown: list[str] = [""]

    def on_panel(front: FrontPanel) -> None:
        def frame(_image: object, view: Any) -> None:
            if view.screen != shown[0]:
                shown[0] = view.screen
                _say(f"screen: {view.screen}")

        front.controller.frame_listeners.append(frame)
        tasks.add(asyncio.get_running_loop().create_task(_fingers(front)))
        _say("panel: ready")

    try:
        return await run_service(config, on_panel=on_panel)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", action="append", type=Path, required=True)
    args = parser.parse_args()
    config = load_config(args.config)
    configure_logging(config.log_level)
    return asyncio.run(_main(config))


if __name__ == "__main__":
    sys.exit(main())
