"""Timing and memory helpers shared by the benchmark scripts (run as ``python benchmarks/X.py``)."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable


def best_of(func: Callable[[], object], repeat: int) -> float:
    """The fastest of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return min(times)


def peak_memory(func: Callable[[], object]) -> int:
    """Peak bytes allocated during one call (tracemalloc; numpy reports its buffers to it)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    func()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def torch_machine(dev) -> str:
    """One line naming the machine a torch benchmark ran on: CPU, cores, torch threads, GPU."""
    import os
    import platform

    import torch

    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "none"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), GPU: {gpu}; device {dev}"
    )
