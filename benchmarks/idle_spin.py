#!/usr/bin/env python3
"""How much CPU a BLAS/OpenMP library's idle workers burn after a call: spin-waiting, measured without perf.

    .venv/bin/python benchmarks/idle_spin.py [--library openblas|openmp] [--calls 20] [--idle-ms 200]

The main thread makes one multi-threaded call (a 512x512 matmul through numpy's OpenBLAS, or a
HistGradientBoosting fit step through scikit-learn's libgomp), then sleeps --idle-ms. The CPU time the
library's worker threads gain while the caller sleeps (/proc/self/task/<tid>/schedstat) is their
spinning; per call, median of --calls. Run it under the settings to compare (OPENBLAS_THREAD_TIMEOUT,
OMP_WAIT_POLICY, GOMP_SPINCOUNT, KMP_BLOCKTIME, `python -m corral`, `python -m tbb`). CPU time counts
iterations actually run, so a busy machine shortens what it shows for time-based spinning (OpenBLAS
counts cycles of wall time) but not for count-based spinning (libgomp counts iterations).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time


def cpu_ns(tids) -> dict[int, int]:
    out = {}
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                out[tid] = int(f.read().split()[0])
        except OSError:
            pass
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--library", choices=("openblas", "openmp"), default="openblas")
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--idle-ms", type=float, default=200.0)
    p.add_argument("--limit-after", action="store_true",
                   help="right after each call, threadpoolctl sets the library to 1 thread (restored before the "
                        "next call), as corral does when a second task starts: does that stop the spinning?")
    args = p.parse_args()

    import numpy as np

    if args.library == "openblas":
        a = np.random.default_rng(0).random((512, 512))

        def call():
            a @ a
    else:
        from sklearn.datasets import make_classification
        from sklearn.ensemble import HistGradientBoostingClassifier

        X, y = make_classification(n_samples=2000, n_features=10, random_state=0)

        def call():
            HistGradientBoostingClassifier(max_iter=1, max_leaf_nodes=3).fit(X, y)

    call()  # the workers start
    me = threading.get_native_id()
    spins, busy = [], []
    for _ in range(args.calls):
        tids = [int(t) for t in os.listdir("/proc/self/task") if int(t) != me]
        before = cpu_ns(tids)
        call()
        after_call = cpu_ns(tids)
        if args.limit_after:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1):
                time.sleep(args.idle_ms / 1000.0)
        else:
            time.sleep(args.idle_ms / 1000.0)
        after_idle = cpu_ns(tids)
        busy.append(sum(after_call[t] - before.get(t, 0) for t in after_call) / 1e6)
        spins.append(sum(after_idle[t] - after_call.get(t, 0) for t in after_idle) / 1e6)
    print(json.dumps({"library": args.library, "workers_cpu_during_call_ms": round(statistics.median(busy), 3),
                      "workers_cpu_while_idle_ms": round(statistics.median(spins), 3),
                      "idle_max_ms": round(max(spins), 3),
                      "env": {k: v for k, v in os.environ.items()
                              if k in ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                       "KMP_BLOCKTIME")}}))


if __name__ == "__main__":
    main()
