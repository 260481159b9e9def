"""Timing helper shared by the benchmark scripts."""

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
