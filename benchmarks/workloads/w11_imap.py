#!/usr/bin/env python3
"""W11 imap: a million tiny items through multiprocessing.pool.ThreadPool() (default size), one item per task
(chunksize 1): `sum(pool.imap_unordered(tiny, range(N)))`, or imap, or map with --method. What a pool costs
per item where the items come lazily and results stream back, the other half of issue 12's per-task cost
(W8 is the executor's). Prints one BENCH_RESULT JSON line (items per second)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402


def main():
    p = _common.parser(__doc__)
    p.add_argument("--items", type=_common.positive_int, default=1_000_000, help="items per pass")
    p.add_argument("--method", choices=("imap_unordered", "imap", "map"), default="imap_unordered")
    p.set_defaults(passes=1)
    args = p.parse_args()
    items = range(args.items)
    expected = sum(_common.tiny(x) for x in items)
    totals: list = []
    processes = args.pool  # None: the pool's default size, os.cpu_count()
    with _common.thread_pool(args.impl, processes) as pool:
        def one_pass():
            totals.append(sum(getattr(pool, args.method)(_common.tiny, items)))

        seconds = _common.timed_passes(args.passes, one_pass)
        workers = getattr(pool, "_processes", processes)  # tbb4py's Pool has no _processes
    _common.check(all(t == expected for t in totals), "results went missing")
    _common.emit("W11", args.impl, workers, args.passes * args.items / sum(seconds), "items/s", passes=seconds,
                 items=args.items, method=args.method)


if __name__ == "__main__":
    main()
