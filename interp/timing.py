"""How the benchmarks measure: interleaved repeats, wall and CPU time, peak memory.

Methods compared in one benchmark run in turn, once per repeat, in one process, so that machine
noise hits them alike; a benchmark reports medians and their ratios to a baseline, never an
absolute time a test could assert.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the process RSS every 5 ms while open.

    ``.peak`` is the highest value seen, ``.growth`` how far it rose above the value at entry
    (memory a method allocates on top of what the process already holds).
    """

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def growth(self) -> int:
        """Peak minus the RSS at entry, in bytes."""
        return self.peak - self.start


@dataclass
class Timings:
    """Wall and CPU times, peak RSS, RSS growth and peak CUDA memory of each method over repeats.

    CPU time beside wall time: on a machine shared with other jobs, a process's wall time depends
    on the share of the cores it gets; its CPU time does not (one thread: the two agree on an
    idle machine).
    """

    times: dict[str, list[float]]
    cpu_times: dict[str, list[float]]
    peak_rss: dict[str, int]
    rss_growth: dict[str, int]
    cuda_peak: dict[str, int]
    """``torch.cuda.max_memory_allocated`` during the method (0 on CPU, where RSS tells)."""

    @property
    def median(self) -> dict[str, float]:
        """Median wall time per method."""
        return {k: statistics.median(v) for k, v in self.times.items()}

    @property
    def cpu_median(self) -> dict[str, float]:
        """Median CPU time (this process, all threads) per method."""
        return {k: statistics.median(v) for k, v in self.cpu_times.items()}


def interleaved(methods: dict[str, Callable[[], None]], repeats: int, cuda: bool) -> Timings:
    """Run every method once per repeat, in turn, so machine noise hits them alike."""
    zeros = dict.fromkeys(methods, 0)
    out = Timings(
        {k: [] for k in methods}, {k: [] for k in methods}, dict(zeros), dict(zeros), dict(zeros)
    )
    for _ in range(repeats):
        for name, run in methods.items():
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            with PeakRSS() as rss:
                t, cpu = time.perf_counter(), time.process_time()
                run()
                if cuda:
                    torch.cuda.synchronize()
                out.times[name].append(time.perf_counter() - t)
                out.cpu_times[name].append(time.process_time() - cpu)
            out.peak_rss[name] = max(out.peak_rss[name], rss.peak)
            out.rss_growth[name] = max(out.rss_growth[name], rss.growth)
            if cuda:
                out.cuda_peak[name] = max(out.cuda_peak[name], torch.cuda.max_memory_allocated())
    return out


def megabytes(values: dict[str, int]) -> dict[str, float]:
    """Byte counts per method in MiB, rounded to 0.1."""
    return {k: round(v / 2**20, 1) for k, v in values.items()}
