"""Process memory and machine facts for the benchmark scripts (Linux /proc)."""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (VmRSS, VmHWM...), -1 when absent."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1)) if match else -1


def mem_available_mib() -> float:
    match = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return int(match.group(1)) / 1024 if match else float("inf")


def reset_peak_rss() -> bool:
    """Reset VmHWM (and so ru_maxrss) to the current RSS; Linux >= 4.0."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def trim_heap() -> None:
    """Give freed heap pages back to the OS, so RSS readings mean what is in use."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


def gib(mib_value: float) -> str:
    return f"{mib_value / 1024:.2f} GiB" if mib_value >= 1024 else f"{mib_value:.0f} MiB"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def print_and_save(figures: dict, out: Path | None) -> None:
    """Print a benchmark's figures as indented JSON, and write them to ``out`` when given."""
    text = json.dumps(figures, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")
