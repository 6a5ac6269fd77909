#!/usr/bin/env python3
"""R4 scipy.linalg: a multiprocessing.pool.ThreadPool(os.cpu_count()) maps scipy.linalg.eigh over
symmetric arrays (LAPACK's syevr through scipy's own OpenBLAS, a second copy beside numpy's). Prints one
BENCH_RESULT JSON line (seconds) whose `answer` (the largest eigenvalue of every array) the harness
compares with plain python's."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402


def largest_eigenvalue(a):
    import scipy.linalg

    return float(scipy.linalg.eigh(a, eigvals_only=True)[-1])


def main():
    p = _common.parser(__doc__)
    p.add_argument("--arrays", type=_common.positive_int, default=64, help="number of arrays (tasks per pass)")
    p.add_argument("--n", type=_common.positive_int, default=256, help="side of each array")
    p.set_defaults(passes=1)
    args = p.parse_args()
    pool = args.pool or _common.cpu_count()

    import numpy as np
    import scipy.linalg  # noqa: F401  (loaded before the clock, as the program's import would)

    rng = np.random.default_rng(args.seed)
    arrays = []
    for _ in range(args.arrays):
        a = rng.random((args.n, args.n))
        arrays.append(a + a.T)
    results: list = []
    with _common.thread_map(args.impl, pool) as pmap:
        seconds = _common.timed_passes(args.passes, lambda: results.append(pmap(largest_eigenvalue, arrays)))

    last = results[-1]
    _common.check(len(last) == len(arrays), f"{len(last)} results for {len(arrays)} arrays")
    _common.check(np.isclose(last[0], largest_eigenvalue(arrays[0])), "eigh differs from the main thread's")
    _common.emit("R4", args.impl, pool, sum(seconds), "s", passes=seconds, tasks=len(arrays), answer=last)


if __name__ == "__main__":
    main()
