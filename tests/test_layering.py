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
    "ui/progress.py",
    "media/rfc4733.py",
    "media/codecs.py",
    "signaling/messages.py",
    "signaling/protocol.py",
    "signaling/backoff.py",
    "signaling/urls.py",
    "signaling/limits.py",
    "phone/call.py",
    "media/dtmf.py",
    "phone/quality.py",
    "phone/options.py",
    "media/tones.py",
    "media/levels.py",
    "media/jitter.py",
    "media/echo.py",
    "../dev/appliance_dev/dtmf_detect.py",  # a test tool, outside the package
    "../dev/appliance_dev/impairment.py",  # the netns forwarder's decisions
    "hardware/keypad.py",
    "hardware/ports.py",
    "ui/panel.py",
    "ui/panel_core.py",
    "ui/view.py",
    "ui/volume.py",
    "ui/reset_confirm.py",
    "ui/gestures.py",
    "ui/calllog_view.py",
    "ui/commands.py",
    "calllog/core.py",
    "ui/screens.py",
    "ui/notices.py",
    "ui/lettering.py",
    "selftest/plan.py",
    "cadence.py",
    "exchange/core.py",
    "exchange/fields.py",
    "exchange/model.py",
    "exchange/timers.py",
    "exchange/calls.py",
    "exchange/relay.py",
    "exchange/outbox.py",
    "exchange/quotas.py",
    "update/machine.py",
    "update/policy.py",
    "tokens.py",
    "provisioning/grant.py",
    "provisioning/admin.py",
    "provisioning/flow.py",
    "web/guard.py",
    "web/pages.py",
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


# ---------------------------------------------------------------- the house rules

#: Packages (and top-level modules) from the bottom up. A module may import
#: its own package and anything on a lower floor, never a higher one.
FLOORS: list[set[str]] = [
    {"errors", "log", "tasks", "events", "cadence", "system", "schema", "files"},
    {"signaling", "media", "tokens"},
    {"hardware", "audio", "exchange"},
    {"phone"},
    {"calllog"},  # follows the engine's calls; the panel shows it
    {"ui", "update", "installer", "selftest"},
    {"web"},  # the phone's page: sets the panel, shows the log; [web] in config
    {"config", "provisioning"},
    {"app", "service_tasks", "config_error"},  # the root and its helpers
    {"cli", "__main__"},
]

#: Rules beyond the floors (style 4.2): (importer, imported) never allowed.
NEVER = {
    ("audio", "hardware"),  # Device.audio gets its devices through media's seams
    ("audio", "phone"),  # the engine binds itself to Device.audio
    ("media", "hardware"),  # backends are found by name (entry points)
    ("hardware", "audio"),
    ("exchange", "phone"),  # the exchange is the gateway side, not a phone
}


def _unit(module: str) -> str:
    """The package (first name under appliance) a dotted module belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every appliance module ``path`` imports, at any depth of the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("appliance"))
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.startswith("appliance")
        ):
            found.add(node.module)
            # "from appliance.audio import helper" imports a submodule
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        graph[name] = {m for m in _imports(path) if m in files and m != name}
    return graph


def _floor(unit: str) -> int:
    for level, units in enumerate(FLOORS):
        if unit in units:
            return level
    raise AssertionError(f"appliance.{unit} is on no floor: add it to FLOORS")


def test_every_import_points_down_or_sideways():
    upward = []
    for module, imported in _graph().items():
        if module == "appliance":  # the package's lazy public facade
            continue
        for target in imported - {"appliance"}:  # __version__ only
            a, b = _unit(module), _unit(target)
            if a != b and (_floor(b) > _floor(a) or (a, b) in NEVER):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports against the house rules:\n" + "\n".join(sorted(upward))


#: The only hardware modules the front-panel logic may import: its seam.
UI_MAY_IMPORT_FROM_HARDWARE = {"appliance.hardware.ports"}


def test_ui_imports_no_concrete_hardware():
    concrete = sorted(
        f"{module} -> {target}"
        for module, imported in _graph().items()
        if _unit(module) == "ui"
        for target in imported
        if _unit(target) == "hardware" and target not in UI_MAY_IMPORT_FROM_HARDWARE
    )
    assert not concrete, "\n".join(concrete)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_between_files():
    graph = _graph()
    graph.pop("appliance", None)
    assert not _cycles(graph)


def test_no_import_cycles_between_packages():
    graph = _graph()
    graph.pop("appliance", None)
    units: dict[str, set[str]] = {}
    for module, imported in graph.items():
        units.setdefault(_unit(module), set()).update(
            _unit(t) for t in imported if _unit(t) != _unit(module)
        )
    assert not _cycles(units)


def test_the_rules_can_fail():
    # A made-up upward import and a made-up cycle are caught by the checks.
    assert _floor("phone") > _floor("audio")
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
