"""The hardware self-test (``appliance check``) as a pure sequence of steps.

Whoever has just soldered a phone wants one answer per part: does the
speaker play, does the microphone hear, do the LEDs light, does the OLED
draw, does every key reach the firmware. :class:`SelfTest` decides the order,
what is expected at each step, when a key has waited long enough, and what
passed; :mod:`appliance.selftest.runner` does the I/O.

Rules of this file
------------------
* No I/O and no clock: every input takes ``now`` (monotonic seconds); the
  adapter calls :meth:`SelfTest.tick` at :meth:`SelfTest.next_deadline`.
* Outputs are facts drained with :meth:`SelfTest.events_received`:
  :class:`StepStarted` (the adapter performs the step, or shows the prompt of
  an :class:`AskInput` and feeds the panel's inputs in), :class:`StepFinished`
  and, once, :class:`CheckFinished`.
* A step the adapter performs (tone, recording, LED, screen) ends with
  :meth:`SelfTest.step_done` (``error`` when it failed) or
  :meth:`SelfTest.level_measured` for a recording. An :class:`AskInput` ends
  with the expected input, a skip, or its timeout; other inputs meanwhile are
  noted (a key wired to the wrong line shows up as "got 6") and otherwise
  ignored.
* Outcomes: ``pass``, ``fail`` and ``skipped``; skipping is the person's
  choice and never fails the check.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from appliance.errors import InvalidStateError

__all__ = [
    "DEFAULT_KEY_TIMEOUT_S",
    "MIN_INPUT_DBFS",
    "AskInput",
    "BlinkLed",
    "CheckFinished",
    "DrawTestScreen",
    "Outcome",
    "PlayTone",
    "Prompt",
    "RecordInput",
    "Result",
    "SelfTest",
    "Step",
    "StepFinished",
    "StepStarted",
    "build_plan",
    "choose_audio_devices",
    "part_name",
    "plan_check",
    "prompt_for",
]

#: How long each key or button waits for its press.
DEFAULT_KEY_TIMEOUT_S = 10.0
#: A recording quieter than this is taken for a dead input: even a quiet room
#: gives a working microphone a noise floor well above it, while an input
#: with nothing connected (or muted) reads digital silence (-120 dBFS).
MIN_INPUT_DBFS = -90.0

InputKind = Literal["key", "button", "hook"]


@dataclass(frozen=True)
class PlayTone:
    """Play a sine of ``hz`` at ``dbfs`` (RMS) on output ``device`` for ``seconds``."""

    device: str
    seconds: float = 1.0
    hz: float = 1000.0
    dbfs: float = -15.0


@dataclass(frozen=True)
class RecordInput:
    """Record ``seconds`` from input ``device`` and measure its level."""

    device: str
    seconds: float = 1.0


@dataclass(frozen=True)
class BlinkLed:
    """Blink LED ``led`` (``ringer``, with the buzzer if fitted, or ``status``)."""

    led: str
    seconds: float = 2.0


@dataclass(frozen=True)
class DrawTestScreen:
    """Show the test pattern on the OLED for ``seconds``."""

    seconds: float = 2.0


@dataclass(frozen=True)
class AskInput:
    """Ask for a keypad key, a button, or the hook switch (``name`` ``hook``)."""

    kind: InputKind
    name: str


Step = PlayTone | RecordInput | BlinkLed | DrawTestScreen | AskInput


class Outcome(StrEnum):
    """How a part did."""

    PASS = "pass"
    FAIL = "fail"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Result:
    """The verdict on one part; ``level_dbfs`` for a recording."""

    part: str
    outcome: Outcome
    detail: str = ""
    level_dbfs: float | None = None


@dataclass(frozen=True)
class Prompt:
    """What the OLED and the terminal say during a step."""

    title: str
    big: str
    hint: str


@dataclass(frozen=True)
class StepStarted:
    """Step ``index`` (0-based) of ``total`` begins; ``deadline`` for asks."""

    step: Step
    index: int
    total: int
    deadline: float | None


@dataclass(frozen=True)
class StepFinished:
    """A step ended with ``result``."""

    step: Step
    result: Result


@dataclass(frozen=True)
class CheckFinished:
    """Every step ended; ``results`` include the notes given at the start."""

    results: tuple[Result, ...]

    @property
    def passed(self) -> bool:
        """Whether no part failed."""
        return all(r.outcome is not Outcome.FAIL for r in self.results)


Event = StepStarted | StepFinished | CheckFinished

_BUTTON_WORDS = {
    "ready": "Ready",
    "accept": "Accept",
    "hangup": "Hangup",
    "mute": "Mute",
    "vol_up": "Vol+",
    "vol_down": "Vol-",
}


def part_name(step: Step) -> str:
    """The part a step tests, as the summary names it."""
    if isinstance(step, PlayTone):
        return f"output {step.device}"
    if isinstance(step, RecordInput):
        return f"input {step.device}"
    if isinstance(step, BlinkLed):
        return f"LED {step.led}"
    if isinstance(step, DrawTestScreen):
        return "screen"
    if step.kind == "hook":
        return "hook switch"
    return f"{step.kind} {step.name}"


def prompt_for(step: Step, timeout_s: float = DEFAULT_KEY_TIMEOUT_S) -> Prompt:
    """What to show while ``step`` runs."""
    if isinstance(step, PlayTone):
        name = step.device.removeprefix("alsa:")
        return Prompt("Speaker", f"{step.hz:g} Hz", f"tone on {name}")
    if isinstance(step, RecordInput):
        name = step.device.removeprefix("alsa:")
        return Prompt("Microphone", "Speak", f"recording {name}")
    if isinstance(step, BlinkLed):
        return Prompt("LED", step.led.capitalize(), "should blink now")
    if isinstance(step, DrawTestScreen):
        return Prompt("Screen", "test pattern", "a lit border, squares top left")
    wait = f"{timeout_s:g} s"
    if step.kind == "hook":
        return Prompt("Hook switch", "Handset", f"lift or replace it, {wait}")
    if step.kind == "button":
        word = _BUTTON_WORDS.get(step.name, step.name)
        return Prompt("Press button", word, f"within {wait}")
    return Prompt("Press key", step.name, f"within {wait}")


def choose_audio_devices(
    listed: Iterable[tuple[str, str]],
) -> tuple[list[str], list[str]]:
    """Pick one device id per sound device from an ALSA listing.

    ALSA lists every card several times (``plughw:``, ``hw:``, ``sysdefault:``,
    ``front:``, ``dmix:`` ...) next to sound-server routes (``default``,
    ``pulse``). A self-test wants each piece of hardware once, opened as the
    firmware would open it: per card and device number the ``plughw:`` name
    (it converts rate and channels), else ``sysdefault:``, else the first
    listed; names without a card (a PCM defined in an asoundrc) are kept as
    they are; sound-server routes are left out.

    Args:
        listed: ``(id, direction)`` pairs, ids as ``alsa:NAME`` and
            directions ``input`` or ``output``, in listing order.

    Returns:
        ``(outputs, inputs)``, ids in listing order.
    """
    preference = ("plughw", "sysdefault")
    rank = {kind: i for i, kind in enumerate(preference)}
    chosen: dict[str, dict[tuple[str, str], str]] = {"output": {}, "input": {}}
    for device_id, direction in listed:
        name = device_id.removeprefix("alsa:")
        kind, _, args = name.partition(":")
        if name in _SERVER_ROUTES:
            continue
        params = dict(p.split("=", 1) for p in args.split(",") if "=" in p)
        card = params.get("CARD")
        slot = (card, params.get("DEV", "0")) if card else (name, "")
        current = chosen[direction].get(slot)
        if current is None:
            chosen[direction][slot] = device_id
            continue
        current_kind = current.removeprefix("alsa:").partition(":")[0]
        if rank.get(kind, len(preference)) < rank.get(current_kind, len(preference)):
            chosen[direction][slot] = device_id
    return list(chosen["output"].values()), list(chosen["input"].values())


_SERVER_ROUTES = frozenset({"default", "pulse", "pipewire", "jack", "sysdefault"})


def build_plan(
    *,
    outputs: Sequence[str] = (),
    inputs: Sequence[str] = (),
    screen: bool = False,
    leds: Sequence[str] = (),
    keys: Sequence[str] = (),
    buttons: Sequence[str] = (),
    hook: bool = False,
) -> list[Step]:
    """The steps in the order a person follows them.

    The screen comes first (the check visibly started), then the LEDs, the
    outputs and the inputs, and last what needs the person's fingers.
    """
    steps: list[Step] = [DrawTestScreen()] if screen else []
    steps += [BlinkLed(led) for led in leds]
    steps += [PlayTone(device) for device in outputs]
    steps += [RecordInput(device) for device in inputs]
    steps += [AskInput("key", key) for key in keys]
    steps += [AskInput("button", name) for name in buttons if name != "hook"]
    if hook:
        steps.append(AskInput("hook", "hook"))
    return steps


def plan_check(
    *,
    listed: Iterable[tuple[str, str]],
    outputs: Sequence[str] | None,
    inputs: Sequence[str] | None,
    listing_problem: str,
    panel_enabled: bool,
    panel_problem: str,
    display_problem: str,
    keys: str,
    buttons: Sequence[str],
) -> tuple[list[Step], list[Result]]:
    """What ``appliance check`` tests on this phone, and what failed already.

    Args:
        listed: the ALSA listing as ``(id, direction)`` pairs.
        outputs / inputs: device ids given by the person (None: the listing's,
            one per device, :func:`choose_audio_devices`).
        listing_problem: why ALSA could not be listed ("" if it could).
        panel_enabled: ``ui.enabled``; a disabled panel is skipped.
        panel_problem: why the panel's pins could not be opened ("" if they
            could).
        display_problem: why the OLED could not be opened ("" if it could).
        keys: the keypad's keys; buttons: the fitted buttons (``hook``
            included when fitted).

    Returns:
        The steps (:func:`build_plan`) and the notes for :class:`SelfTest`.
    """
    notes: list[Result] = []
    if listing_problem:
        notes.append(Result("sound devices", Outcome.FAIL, listing_problem))
    chosen_outputs, chosen_inputs = choose_audio_devices(listed)
    outputs = chosen_outputs if outputs is None else list(outputs)
    inputs = chosen_inputs if inputs is None else list(inputs)
    for what, found in (("sound outputs", outputs), ("sound inputs", inputs)):
        if not found and not listing_problem:
            notes.append(Result(what, Outcome.FAIL, "no device found"))
    panel = panel_enabled and not panel_problem
    if not panel_enabled:
        notes.append(Result("front panel", Outcome.SKIPPED, "ui.enabled is false"))
    elif panel_problem:
        notes.append(Result("front panel", Outcome.FAIL, panel_problem))
    if panel and display_problem:
        notes.append(Result("screen", Outcome.FAIL, display_problem))
    steps = build_plan(
        outputs=outputs,
        inputs=inputs,
        screen=panel and not display_problem,
        leds=("ringer", "status") if panel else (),
        keys=list(keys) if panel else (),
        buttons=buttons if panel else (),
        hook=panel and "hook" in buttons,
    )
    return steps, notes


@dataclass
class _Running:
    index: int
    started_at: float
    deadline: float | None
    stray: list[str] = field(default_factory=list)


class SelfTest:
    """The self-test sequence.

    Args:
        steps: what to test, in order (see :func:`build_plan`).
        notes: verdicts known before the start (a front panel that could not
            be opened fails; one that is not configured is skipped).
        key_timeout_s: how long each :class:`AskInput` waits (None:
            :data:`DEFAULT_KEY_TIMEOUT_S`).
        min_input_dbfs: the quietest recording that counts as a live input.

    Call :meth:`start`, then process :meth:`events_received` after every
    input method.
    """

    def __init__(
        self,
        steps: Sequence[Step],
        *,
        notes: Sequence[Result] = (),
        key_timeout_s: float | None = None,
        min_input_dbfs: float = MIN_INPUT_DBFS,
    ) -> None:
        if key_timeout_s is None:
            key_timeout_s = DEFAULT_KEY_TIMEOUT_S
        if key_timeout_s <= 0:
            raise ValueError("key_timeout_s must be positive")
        self.steps = tuple(steps)
        self.key_timeout_s = key_timeout_s
        self.min_input_dbfs = min_input_dbfs
        self._results: list[Result] = list(notes)
        self._events: list[Event] = []
        self._running: _Running | None = None
        self._started = False
        self._finished = False
        self._skip_rest = False

    # --- queries ------------------------------------------------------------

    @property
    def current(self) -> Step | None:
        """The step running now (None before the start and once finished)."""
        return None if self._running is None else self.steps[self._running.index]

    @property
    def finished(self) -> bool:
        """Whether every step has ended."""
        return self._finished

    @property
    def results(self) -> tuple[Result, ...]:
        """The verdicts so far, notes first."""
        return tuple(self._results)

    def expecting(self) -> AskInput | None:
        """The input asked for right now, if any."""
        step = self.current
        return step if isinstance(step, AskInput) else None

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must be called next (an ask's timeout)."""
        return None if self._running is None else self._running.deadline

    def events_received(self) -> list[Event]:
        """Drain the facts produced since the last call."""
        events, self._events = self._events, []
        return events

    # --- inputs -------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin with the first step (or finish at once with none).

        Raises:
            InvalidStateError: started already.
        """
        if self._started:
            raise InvalidStateError(message="cannot start while started")
        self._started = True
        self._begin(0, now)

    def step_done(self, now: float, *, error: str | None = None) -> None:
        """The adapter performed the current step; ``error`` says it failed.

        Raises:
            InvalidStateError: the current step is an ask (it ends by input).
        """
        step = self._require_step()
        if isinstance(step, AskInput):
            raise InvalidStateError(message="cannot finish an ask by step_done")
        if error is not None:
            self._finish(Result(part_name(step), Outcome.FAIL, error), now)
        else:
            self._finish(Result(part_name(step), Outcome.PASS, _done_text(step)), now)

    def level_measured(self, dbfs: float, now: float) -> None:
        """The recording of the current :class:`RecordInput` read ``dbfs``.

        Raises:
            InvalidStateError: the current step is not a recording.
        """
        step = self._require_step()
        if not isinstance(step, RecordInput):
            raise InvalidStateError(message="cannot measure a level now")
        text = f"{dbfs:.1f} dBFS"
        if dbfs < self.min_input_dbfs:
            outcome = Outcome.FAIL
            text += " (silence: nothing connected, or muted?)"
        else:
            outcome = Outcome.PASS
        self._finish(Result(part_name(step), outcome, text, dbfs), now)

    def input_event(self, kind: InputKind, name: str, now: float) -> None:
        """The panel reported an input (a key, a button, the hook switch).

        Completes the current ask when it is the one asked for; any other
        input is noted on the ask and otherwise ignored.
        """
        running, step = self._running, self.expecting()
        if running is None or step is None:
            return
        if (kind, name) == (step.kind, step.name):
            waited = now - running.started_at
            self._finish(
                Result(part_name(step), Outcome.PASS, f"pressed after {waited:.1f} s"),
                now,
            )
        else:
            running.stray.append(name)

    def skip(self, now: float, *, rest: bool = False) -> None:
        """Skip the current ask (and, with ``rest``, every ask after it).

        Performed steps cannot be skipped once begun; a skip then does nothing
        (with ``rest`` the asks after it are still skipped).
        """
        if rest:
            self._skip_rest = True
        step = self.expecting()
        if step is not None:
            self._finish(Result(part_name(step), Outcome.SKIPPED, "skipped"), now)

    def tick(self, now: float) -> None:
        """Fail an ask whose time is up."""
        running, step = self._running, self.expecting()
        if running is None or step is None or running.deadline is None:
            return
        if now >= running.deadline:
            text = f"no press within {self.key_timeout_s:g} s"
            if running.stray:
                text += f" (got {' '.join(running.stray)})"
            self._finish(Result(part_name(step), Outcome.FAIL, text), now)

    # --- internals ----------------------------------------------------------

    def _require_step(self) -> Step:
        step = self.current
        if step is None:
            raise InvalidStateError(message="cannot report a step while none runs")
        return step

    def _begin(self, index: int, now: float) -> None:
        while index < len(self.steps):
            step = self.steps[index]
            if isinstance(step, AskInput) and self._skip_rest:
                self._results.append(
                    Result(part_name(step), Outcome.SKIPPED, "skipped")
                )
                index += 1
                continue
            deadline = now + self.key_timeout_s if isinstance(step, AskInput) else None
            self._running = _Running(index, now, deadline)
            self._events.append(StepStarted(step, index, len(self.steps), deadline))
            return
        self._running = None
        self._finished = True
        self._events.append(CheckFinished(tuple(self._results)))

    def _finish(self, result: Result, now: float) -> None:
        running = self._running
        assert running is not None
        self._results.append(result)
        self._events.append(StepFinished(self.steps[running.index], result))
        self._begin(running.index + 1, now)


def _done_text(step: Step) -> str:
    if isinstance(step, PlayTone):
        return f"played {step.hz:g} Hz at {step.dbfs:g} dBFS for {step.seconds:g} s"
    if isinstance(step, BlinkLed):
        return "blinked"
    return "drawn"
