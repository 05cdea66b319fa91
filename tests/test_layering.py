"""Import rules of the house style (4.2): pure cores do no I/O.

The modules below decide things (protocol, call and panel state machines,
tones, tokens); they must not import the event loop, sockets, clocks, threads or
hardware libraries. Adapters pass time in and carry results out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "appliance"

PURE = [
    "signaling/messages.py",
    "signaling/protocol.py",
    "signaling/backoff.py",
    "signaling/urls.py",
    "phone/call.py",
    "media/dtmf.py",
    "phone/quality.py",
    "phone/options.py",
    "media/tones.py",
    "media/levels.py",
    "media/dtmf_detect.py",
    "hardware/keypad.py",
    "ui/panel.py",
    "ui/screens.py",
    "cadence.py",
    "exchange/core.py",
    "tokens.py",
]

FORBIDDEN = {
    "asyncio",
    "socket",
    "time",
    "threading",
    "subprocess",
    "select",
    "websockets",
    "aiortc",
    "aioice",
    "av",
    "alsaaudio",
    "gpiozero",
    "luma",
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io(module):
    bad = imported_roots(PACKAGE / module) & FORBIDDEN
    assert not bad, f"{module} imports {sorted(bad)}"


def test_hardware_layer_knows_nothing_of_calls():
    for path in (PACKAGE / "hardware").glob("*.py"):
        text = path.read_text()
        assert "appliance.phone" not in text, path.name
        assert "appliance.signaling" not in text, path.name
