"""Every benchmark still imports: `make bench` is outside the suite, and a
name moved between modules would otherwise only show when someone runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_every_benchmark_module_imports() -> None:
    names = sorted(path.stem for path in BENCH.glob("*.py"))
    assert "run" in names and len(names) > 5
    code = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(BENCH)!r})\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
