#!/usr/bin/env python3
"""W6 I/O plus compute (seed 001, PyParallel's "one active thread per core"): each task computes about
5 ms in native code with the GIL released (an n x n matmul, n calibrated so that one BLAS thread takes
--compute-ms) and then waits about 5 ms (time.sleep, standing for I/O). A multiprocessing.pool.ThreadPool
of 4 x os.cpu_count() runs them. Ideal throughput keeps every budget core computing: budget / compute
time tasks per second. Prints one BENCH_RESULT JSON line (tasks per second); --calibrate prints the
matrix side instead."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import _common  # noqa: E402


def calibrate(target_ms: float) -> dict:
    """Largest n whose n x n matmul takes at most target_ms here (run with one BLAS thread)."""
    def fastest_ms(n: int) -> float:
        # The fastest of several runs: the machine may be busy, and the quiet-machine time is wanted.
        a = np.random.default_rng(0).random((n, n))
        a @ a  # warm-up
        times = []
        for _ in range(9):
            start = time.perf_counter()
            a @ a
            times.append((time.perf_counter() - start) * 1000.0)
        return min(times)

    n, ms = 64, fastest_ms(64)
    while ms < target_ms and n < 4096:
        n = int(n * 1.25)
        ms = fastest_ms(n)
    for _ in range(3):  # refine by the cube law (time ~ n^3)
        n = max(16, int(round(n * (target_ms / ms) ** (1.0 / 3.0))))
        ms = fastest_ms(n)
    return {"n": n, "compute_ms": ms}


def main():
    p = _common.parser(__doc__)
    p.add_argument("--tasks", type=_common.positive_int, default=400, help="tasks per pass")
    p.add_argument("--n", type=_common.positive_int, default=400, help="matrix side (from --calibrate)")
    p.add_argument("--wait-ms", type=float, default=5.0, help="how long each task waits after computing")
    p.add_argument("--calibrate", type=float, metavar="MS", default=None,
                   help="print the matrix side whose matmul takes MS milliseconds, and exit")
    args = p.parse_args()
    if args.calibrate is not None:
        print(_common.RESULT_PREFIX + json.dumps(calibrate(args.calibrate)), flush=True)
        return
    pool = args.pool or 4 * _common.cpu_count()
    rng = np.random.default_rng(args.seed)
    matrices = [rng.random((args.n, args.n)) for _ in range(8)]
    wait_s = args.wait_ms / 1000.0

    def compute_then_wait(index: int) -> float:
        a = matrices[index % len(matrices)]
        value = float((a @ a)[0, 0])
        time.sleep(wait_s)
        return value

    expected = [float((m @ m)[0, 0]) for m in matrices]
    results: list = []
    with _common.thread_map(args.impl, pool) as pmap:
        def one_pass():
            results[:] = pmap(compute_then_wait, range(args.tasks))

        seconds = _common.timed_passes(args.passes, one_pass)

    _common.check(all(np.isclose(r, expected[i % len(expected)]) for i, r in enumerate(results)),
                  "a task computed a different product")
    throughput = args.passes * args.tasks / sum(seconds)
    _common.emit("W6", args.impl, pool, throughput, "tasks/s", passes=seconds, tasks=args.tasks, n=args.n)


if __name__ == "__main__":
    main()
