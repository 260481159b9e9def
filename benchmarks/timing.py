"""Timing helpers shared by the benchmark scripts."""

import os
import statistics
import time


def median_ms(fn, repeats):
    """Median wall time of `fn()` in milliseconds over `repeats` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def cpu_seconds():
    """User + system CPU time of this process so far."""
    times = os.times()
    return times.user + times.system


def interleaved(fns, repeats, warmups):
    """{name: (median ms, cores used, wall times in s)} of the callables `fns` (name -> fn).

    Each fn is called `warmups` times, then the calls are timed round-robin, starting one
    further along each round, so that load from other jobs on a shared machine falls on every
    path alike. Cores used = process CPU time / wall time over a path's timed calls.
    """
    names = list(fns)
    for _ in range(warmups):
        for name in names:
            fns[name]()
    walls = {name: [] for name in names}
    cpus = dict.fromkeys(names, 0.0)
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            cpu, start = cpu_seconds(), time.perf_counter()
            fns[name]()
            walls[name].append(time.perf_counter() - start)
            cpus[name] += cpu_seconds() - cpu
    return {
        name: (statistics.median(walls[name]) * 1000, cpus[name] / sum(walls[name]), walls[name])
        for name in names
    }
