"""The machine a benchmark ran on, in words: every script prints it beside its figures."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_line(load0: tuple[float, ...], load1: tuple[float, ...]) -> str:
    """``machine: host arch (CPU), N cores, python X; load average at start/end a/b``, from
    :func:`os.getloadavg` taken at the start and the end of the run."""
    return (f"machine: {platform.node()} {platform.machine()} ({cpu_name()}), {os.cpu_count()} cores, "
            f"python {platform.python_version()}; load average at start/end {load0[0]:.1f}/{load1[0]:.1f}")
