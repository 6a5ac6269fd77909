#!/usr/bin/env python3
"""R3 dask: `(x @ x.T).sum()` of a chunked dask.array under dask's threaded scheduler (a
concurrent.futures.ThreadPoolExecutor of os.cpu_count() threads), each chunk product a BLAS call that
starts its own threads. The array is made in numpy before the clock starts. Prints one BENCH_RESULT JSON
line (seconds) whose `answer` (the sum) the harness compares with plain python's."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402


def main():
    p = _common.parser(__doc__)
    p.add_argument("--n", type=_common.positive_int, default=2000, help="rows and columns of x")
    p.add_argument("--chunk", type=_common.positive_int, default=500, help="side of each square chunk")
    p.set_defaults(passes=1)
    args = p.parse_args()
    if args.impl not in ("stdlib", "threadpoolctl"):
        raise SystemExit(f"--impl {args.impl}: dask's threaded scheduler is this workload's pool")

    import dask
    import dask.array as da
    import numpy as np

    x = da.from_array(np.random.default_rng(args.seed).random((args.n, args.n)), chunks=(args.chunk, args.chunk))
    sums: list = []
    # --pool (the hand-tuned grid): the scheduler's num_workers; by default dask's own pool of cpu_count.
    settings = {"scheduler": "threads"} | ({"num_workers": args.pool} if args.pool else {})

    def one_pass():
        with _common.blas_limited_to_one_if(args.impl), dask.config.set(settings):
            sums.append(float((x @ x.T).sum().compute()))

    seconds = _common.timed_passes(args.passes, one_pass)
    _common.check(all(np.isclose(s, sums[0], rtol=1e-9) for s in sums), "passes computed different sums")
    _common.emit("R3", args.impl, args.pool or _common.cpu_count(), sum(seconds), "s", passes=seconds,
                 chunks=(args.n // args.chunk) ** 2, answer=sums[-1])


if __name__ == "__main__":
    main()
