#!/usr/bin/env python3
"""W4 processes: a multiprocessing.Pool(os.cpu_count()) whose tasks each run np.linalg.qr over a batch of
256x256 arrays made in the worker, under the start method given (--start-method fork|spawn). Every worker
process loads its own BLAS, which starts its own threads: processes x BLAS threads oversubscribe the
machine unless each child is given a share. Timed from creating the pool to joining it (start-up of
the workers included: that is what a program pays). Prints one BENCH_RESULT JSON line."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import multiprocessing  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import _common  # noqa: E402


def qr_batch(task):
    """One task: make `count` arrays from `seed`, factor each, return a checksum of the R factors."""
    seed, count, n = task
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(count):
        r = np.linalg.qr(rng.random((n, n)), mode="r")
        total += float(np.abs(np.diag(r)).sum())
    return total


def main():
    p = _common.parser(__doc__)
    p.add_argument("--start-method", choices=("fork", "spawn"), required=True)
    p.add_argument("--tasks", type=_common.positive_int, default=16, help="tasks per pass")
    p.add_argument("--batch", type=_common.positive_int, default=4, help="arrays per task")
    p.add_argument("--n", type=_common.positive_int, default=256, help="side of each array")
    args = p.parse_args()
    processes = args.pool or _common.cpu_count()
    multiprocessing.set_start_method(args.start_method, force=True)
    tasks = [(args.seed * 1_000_003 + i, args.batch, args.n) for i in range(args.tasks)]

    results = []
    start = time.perf_counter()
    if args.impl.startswith("joblib-"):
        with _common.joblib_map(args.impl, processes) as pmap:
            passes = _common.timed_passes(args.passes, lambda: results.append(pmap(qr_batch, tasks)))
    else:
        with _common.blas_limited_to_one_if(args.impl):
            if args.impl == "corral":
                import corral

                pool = corral.Pool(processes)
            else:
                pool = multiprocessing.Pool(processes)
            with pool:
                passes = _common.timed_passes(args.passes, lambda: results.append(pool.map(qr_batch, tasks)))
                pool.close()
                pool.join()
    seconds = time.perf_counter() - start

    expected = qr_batch(tasks[0])
    _common.check(all(len(r) == len(tasks) for r in results), "a pass lost results")
    _common.check(all(np.isclose(r[0], expected) for r in results), "a worker computed a different checksum")
    _common.emit("W4", args.impl, processes, seconds, "s", passes=passes, start_method=args.start_method,
                 startup_and_join=seconds - sum(passes), tasks=len(tasks))


if __name__ == "__main__":
    main()
