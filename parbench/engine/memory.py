"""Peak memory of a phase (training, evaluation), on the device that did the work.

CUDA: `torch.cuda.max_memory_allocated` since the phase began. CPU: the process's peak resident set size
(Linux VmHWM), reset at the start of the phase through /proc/self/clear_refs so a run inside a suite does not
report an earlier run's peak; where the reset is not possible the value is the process-lifetime peak, and the
label says so.
"""

from __future__ import annotations

import resource
import sys

import torch


def reset_peak(device: torch.device) -> bool:
    """Start a phase; returns whether the CPU peak could be reset (always True on CUDA)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _vm_hwm_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _vm_hwm_mb()


def kind(device: torch.device, reset_ok: bool = True) -> str:
    if device.type == "cuda":
        return "gpu allocated"
    return "cpu peak rss" if reset_ok else "cpu peak rss (process lifetime)"
