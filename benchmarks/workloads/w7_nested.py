#!/usr/bin/env python3
"""W7 nested: an outer concurrent.futures.ThreadPoolExecutor(os.cpu_count()) whose tasks each open an inner
ThreadPoolExecutor(os.cpu_count()) and map np.linalg.qr over their own arrays, as a library called from a
pool does. Outer x inner x BLAS threads multiply; a pool created inside a task should share its
parent's budget instead (corral's invariant 3). Three passes. Prints one BENCH_RESULT JSON line."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common  # noqa: E402


def main():
    p = _common.parser(__doc__)
    p.add_argument("--outer-tasks", type=_common.positive_int, default=4, help="tasks of the outer pool")
    p.add_argument("--inner-arrays", type=_common.positive_int, default=16, help="arrays each outer task maps")
    p.add_argument("--inner-pool", type=_common.positive_int, default=None,
                   help="workers of each inner pool (default os.cpu_count())")
    p.add_argument("--n", type=_common.positive_int, default=256, help="side of each array")
    args = p.parse_args()
    outer = args.pool or _common.cpu_count()
    inner = args.inner_pool or _common.cpu_count()
    rng = np.random.default_rng(args.seed)
    groups = [[rng.random((args.n, args.n)) for _ in range(args.inner_arrays)] for _ in range(args.outer_tasks)]

    def r_diagonal_sum(a):
        return float(np.abs(np.diag(np.linalg.qr(a, mode="r"))).sum())

    if args.impl.startswith("joblib-"):
        # joblib's own nesting: an inner Parallel inside a worker (joblib decides how it runs).
        def outer_task(group):
            with _common.joblib_map(args.impl, inner) as inner_map:
                return sum(inner_map(r_diagonal_sum, group))

        with _common.joblib_map(args.impl, outer) as outer_map:
            results: list = []
            seconds = _common.timed_passes(args.passes, lambda: results.append(outer_map(outer_task, groups)))
    else:
        def outer_task(group):
            with _common.executor(args.impl, inner) as inner_pool:
                return sum(inner_pool.map(r_diagonal_sum, group))

        results = []
        with _common.blas_limited_to_one_if(args.impl), _common.executor(args.impl, outer) as outer_pool:
            seconds = _common.timed_passes(
                args.passes, lambda: results.append(list(outer_pool.map(outer_task, groups))))

    expected = sum(r_diagonal_sum(a) for a in groups[0])
    _common.check(all(np.isclose(r[0], expected) for r in results), "an outer task computed a different sum")
    _common.emit("W7", args.impl, outer, sum(seconds), "s", passes=seconds, inner_pool=inner,
                 tasks=args.outer_tasks * args.inner_arrays)


if __name__ == "__main__":
    main()
