"""The one output format every benchmark uses: ``name: figure (baseline name: figure, ratio x)``."""

from __future__ import annotations

import os
import platform
import subprocess
import sys


def line(
    name: str, figure: float, unit: str, baseline: str, base: float, *, lower_is_better: bool
) -> str:
    """Format a figure with its baseline; the ratio is > 1 when ours is better (faster, more)."""
    if figure and base:
        ratio = base / figure if lower_is_better else figure / base
        text = f"ratio {ratio:.2f}x, >1 = ours better"
    else:
        text = "ratio n/a"
    return f"{name}: {_fmt(figure)} {unit} ({baseline}: {_fmt(base)} {unit}, {text})"


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def machine() -> str:
    """One line naming the interpreter and the machine the figures came from."""
    return (
        f"python {platform.python_version()} on {platform.machine()} {platform.system()}, "
        f"{os.cpu_count()} cores"
    )


def fresh_python(code: str) -> tuple[str, str | None]:
    """Run ``code`` in a fresh interpreter on this one's path (memory measured from a clean start,
    not from a process that already imported everything): (stdout, None), or ("", the error's
    last line)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                          check=False)
    if done.returncode:
        return "", done.stderr.strip().splitlines()[-1]
    return done.stdout, None

