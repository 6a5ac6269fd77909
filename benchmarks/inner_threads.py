#!/usr/bin/env python3
"""What each pool task's libraries are told: the OpenMP and OpenBLAS thread counts a task sees at its start
(threadpoolctl's reading from the task's own thread), under whatever runs this script (plain,
`python -m corral`, OMP_NUM_THREADS=1, or --impl threadpoolctl for `threadpool_limits(1)` around the pool).

    .venv/bin/python benchmarks/inner_threads.py [--impl stdlib|threadpoolctl] [--pool N] [--tasks N]

Each task then fits a small HistGradientBoostingClassifier (OpenMP) and runs a 400x400 matmul (OpenBLAS),
so that the libraries start their threads as a real task would. Prints one JSON line per task and a summary.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import multiprocessing.pool
import os
import sys
import threading
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--impl", choices=("stdlib", "threadpoolctl"), default="stdlib")
    p.add_argument("--pool", type=int, default=os.cpu_count())
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--via", choices=("threadpool", "joblib"), default="threadpool",
                   help="multiprocessing.pool.ThreadPool.map, or joblib's Parallel(backend='threading')")
    p.add_argument("--mimic", type=int, default=0, metavar="N",
                   help="without corral: the first task sets its own OpenMP threads to N, the others to 1 (what "
                        "corral's dynamic rule does when the first task of a burst starts alone)")
    args = p.parse_args()

    import numpy as np
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_info, threadpool_limits

    X, y = make_classification(n_samples=1000, n_features=10, random_state=0)
    a = np.random.default_rng(0).random((400, 400))

    def counts() -> dict:
        seen = collections.defaultdict(list)
        for info in threadpool_info():
            seen[f"{info['internal_api']}:{os.path.basename(info['filepath']).split('.so')[0][:24]}"].append(
                info["num_threads"])
        return dict(seen)

    def task(i: int) -> dict:
        mimic = (threadpool_limits(limits=args.mimic if i == 0 else 1, user_api="openmp") if args.mimic
                 else contextlib.nullcontext())
        with mimic:
            at_start = counts()
            started = time.perf_counter()
            HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(X, y)
        a @ a
        return {"task": i, "thread": threading.get_native_id(), "at_start": at_start,
                "after": counts(), "process_threads": len(os.listdir("/proc/self/task")),
                "seconds": round(time.perf_counter() - started, 3)}

    limit = threadpool_limits(limits=1) if args.impl == "threadpoolctl" else contextlib.nullcontext()
    if args.via == "joblib":
        from joblib import Parallel, delayed

        with limit:
            results = Parallel(n_jobs=args.pool, backend="threading")(delayed(task)(i) for i in range(args.tasks))
    else:
        with limit, multiprocessing.pool.ThreadPool(args.pool) as pool:
            results = pool.map(task, range(args.tasks), chunksize=1)
    for r in results:
        print(json.dumps(r))
    core = sys.modules.get("corral._core")  # under corral: its permit table's counters (lends, overdrafts)
    print(json.dumps({"main_thread_after": counts(), "process_threads_at_end": len(os.listdir("/proc/self/task")),
                      "permit_stats": core.permit_stats() if core else None}, default=str))


if __name__ == "__main__":
    main()
