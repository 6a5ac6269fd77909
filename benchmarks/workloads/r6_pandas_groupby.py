#!/usr/bin/env python3
"""R6 pandas: a multiprocessing.Pool(os.cpu_count()) runs a pandas groupby-apply per task, as a program
splits a table by chunks: each task makes its DataFrame in the worker, groups it by key and fits a
least-squares line per group (numpy's lstsq, LAPACK). Mostly Python and pandas, little BLAS: the pool is
the parallelism. Timed from creating the pool to joining it. Prints one BENCH_RESULT JSON line (seconds)
whose `answer` (a checksum of every task's coefficients) the harness compares with plain python's."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


import _common  # noqa: E402


def _slope(group):
    import numpy as np

    design = np.column_stack([np.ones(len(group)), group["x"].to_numpy(), group["z"].to_numpy()])
    coefficients = np.linalg.lstsq(design, group["y"].to_numpy(), rcond=None)[0]
    return float(coefficients[1])


def chunk(task):
    """One chunk of the table: the sum of the per-group slopes."""
    import numpy as np
    import pandas as pd

    seed, rows, keys = task
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(rows)
    frame = pd.DataFrame({"key": rng.integers(0, keys, rows), "x": x, "z": rng.standard_normal(rows),
                          "y": 2.0 * x + rng.standard_normal(rows)})
    slopes = frame.groupby("key")[["x", "z", "y"]].apply(_slope)
    return float(slopes.sum())


def main():
    p = _common.parser(__doc__)
    p.add_argument("--tasks", type=_common.positive_int, default=16, help="chunks")
    p.add_argument("--rows", type=_common.positive_int, default=40_000, help="rows per chunk")
    p.add_argument("--keys", type=_common.positive_int, default=400, help="groups per chunk")
    p.set_defaults(passes=1)
    args = p.parse_args()
    processes = args.pool or _common.cpu_count()
    tasks = [(args.seed * 1_000_003 + i, args.rows, args.keys) for i in range(args.tasks)]

    seconds, passes, answer = _common.process_pool_passes(args.impl, processes, args.passes, chunk, tasks)
    _common.emit("R6", args.impl, processes, seconds, "s", passes=passes, tasks=len(tasks), answer=answer)


if __name__ == "__main__":
    main()
