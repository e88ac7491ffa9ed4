"""The machine a benchmark ran on: cores, CPU, memory, OS, Python, package versions, load."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

NOT_INSTALLED = "not installed"
# Shown name -> distributions that provide it, first installed one wins (OpenCV ships
# under several names).
PACKAGES: dict[str, tuple[str, ...]] = {
    "realtime-avatar": ("realtime-avatar",),
    "numpy": ("numpy",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "piper-tts": ("piper-tts",),
    "faster-whisper": ("faster-whisper",),
    "ctranslate2": ("ctranslate2",),
    "aiortc": ("aiortc",),
    "av": ("av",),
    "opencv": (
        "opencv-contrib-python",
        "opencv-python",
        "opencv-contrib-python-headless",
        "opencv-python-headless",
    ),
}


def package_version(distributions: tuple[str, ...]) -> str:
    """Version of the first installed distribution; named when it is not the first choice."""
    for index, name in enumerate(distributions):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        return version if index == 0 else f"{version} ({name})"
    return NOT_INSTALLED


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform knows."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            # x86 says "model name"; some ARM kernels only give "Hardware" or "Model".
            if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def memory_total_mb() -> float | None:
    """Physical memory in MB, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError, AttributeError):
        return None


def cpu_quota() -> float | None:
    """CPUs allowed by a cgroup v2 quota (containers), or None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="utf-8").split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def machine_info() -> dict[str, Any]:
    """Everything about this machine that a reader needs to compare two benchmark runs."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        load = [round(value, 2) for value in os.getloadavg()]
    except OSError:
        load = None
    memory = memory_total_mb()
    return {
        "cpu_model": cpu_model(),
        "cpu_count_logical": os.cpu_count(),
        "cpu_count_usable": affinity,  # the cores this process may run on
        "cpu_quota": cpu_quota(),
        "machine": platform.machine(),
        "memory_total_mb": round(memory) if memory is not None else None,
        "os": platform.system(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": {shown: package_version(names) for shown, names in PACKAGES.items()},
        "load_average_at_start": load,  # 1, 5, 15 min: high values mean noisy timings
    }
