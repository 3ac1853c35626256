"""Timers and memory probes.

Times come from `time.perf_counter()`; on CUDA the device is synchronized before each reading, so a
timer measures finished GPU work rather than kernel launches.
"""

from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    """Read the clock after the device's queued work has finished."""
    synchronize(device)
    return time.perf_counter()


class ForwardClock:
    """Accumulates the seconds spent inside model forward passes, the rest being engine bookkeeping."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0

    @contextmanager
    def measure(self):
        start = now(self.device)
        try:
            yield
        finally:
            self.seconds += now(self.device) - start


def tensor_bytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak GPU memory allocated by torch on CUDA, else the process's peak resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return int(peak if sys.platform == "darwin" else peak * 1024)
