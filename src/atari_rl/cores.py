"""How many cores a run may use: the ones that other processes leave free.

One learner thread and one emulator thread per core is the fastest split on a quiet
machine. But when another process keeps a core busy, both thread pools wait at every
barrier for the thread that lost its core: on 2 cores a run fell from 1,418 to 183 agent
steps/s with one busy process beside it (README, "Threads"). So the automatic thread
counts (`--torch-threads 0`, `--env-threads 0`) are the cores that are free: measured once
at the start for the emulators, whose threads ale-py fixes when the env is built, and
again every few seconds for the learner, whose thread count torch can change between
updates.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

# What the CPU was doing that counts as busy (idle and iowait do not).
_BUSY = ("user", "nice", "system", "irq", "softirq", "steal")


def cores() -> int:
    return os.cpu_count() or 1


@dataclass
class _Sample:
    wall: float
    busy: float  # CPU seconds of the whole machine
    mine: float  # CPU seconds of this process, every thread of it


def _sample() -> _Sample:
    machine = psutil.cpu_times()
    mine = psutil.Process().cpu_times()
    return _Sample(wall=time.monotonic(),
                   busy=sum(getattr(machine, name, 0.0) for name in _BUSY),
                   mine=mine.user + mine.system)


def busy_elsewhere(before: _Sample, after: _Sample) -> float:
    """Cores' worth of CPU that other processes used between two samples."""
    elapsed = max(after.wall - before.wall, 1e-6)
    return max(0.0, (after.busy - before.busy) - (after.mine - before.mine)) / elapsed


def free_cores(busy: float, total: int | None = None) -> int:
    """Cores left when `busy` cores' worth is used elsewhere; at least one. A core more
    than half used by others counts as taken."""
    total = total or cores()
    return max(1, total - round(busy))


def measure_free_cores(interval_s: float = 0.5) -> int:
    """The cores free now, from what other processes use over `interval_s`."""
    before = _sample()
    time.sleep(interval_s)
    return free_cores(busy_elsewhere(before, _sample()))


@dataclass
class ThreadGovernor:
    """Keeps torch's thread count at the number of free cores while a run goes on.

    `poll()` is cheap: it looks at the clock, and only every `every_s` seconds at the
    CPU counters. Our own threads' time is not counted as busy, so a run alone on the
    machine keeps one thread per core.
    """

    every_s: float = 5.0
    # torch.set_num_threads, passed in so that this module needs no torch
    set_threads: Callable[[int], None] | None = None
    threads: int = 0
    changes: list[tuple[float, int]] = field(default_factory=list)  # (time, threads) log
    _last: _Sample | None = None

    def poll(self) -> int | None:
        """The new thread count when it changed, else None."""
        now = time.monotonic()
        if self._last is None:
            self._last = _sample()
            return None
        if now - self._last.wall < self.every_s:
            return None
        current = _sample()
        wanted = free_cores(busy_elsewhere(self._last, current))
        self._last = current
        if wanted == self.threads:
            return None
        self.threads = wanted
        self.changes.append((now, wanted))
        if self.set_threads is not None:
            self.set_threads(wanted)
        return wanted
