#!/usr/bin/env python3
"""W8 overhead: 100,000 tiny tasks through a concurrent.futures.ThreadPoolExecutor (default size): submit
them all, then collect every result. Measures what the pool itself costs per task, where a scheduler
that adds a budget must stay cheap. Prints one BENCH_RESULT JSON line (tasks per second)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402


def main():
    p = _common.parser(__doc__)
    p.add_argument("--tasks", type=_common.positive_int, default=100_000, help="tasks per pass")
    p.set_defaults(passes=1)
    args = p.parse_args()
    items = range(args.tasks)
    expected = sum(_common.tiny(x) for x in items)
    totals: list = []

    if args.impl.startswith("joblib-"):
        n_jobs = args.pool or _common.cpu_count()
        with _common.joblib_map(args.impl, n_jobs) as pmap:
            seconds = _common.timed_passes(args.passes, lambda: totals.append(sum(pmap(_common.tiny, items))))
        workers = n_jobs
    else:
        pool = _common.executor(args.impl, args.pool)  # None: the implementation's default size
        workers = pool._max_workers if hasattr(pool, "_max_workers") else args.pool

        def submit_then_collect():
            futures = [pool.submit(_common.tiny, x) for x in items]
            totals.append(sum(f.result() for f in futures))

        with pool:
            seconds = _common.timed_passes(args.passes, submit_then_collect)

    _common.check(all(t == expected for t in totals), "results went missing")
    _common.emit("W8", args.impl, workers, args.passes * args.tasks / sum(seconds), "tasks/s",
                 passes=seconds, tasks=args.tasks)


if __name__ == "__main__":
    main()
