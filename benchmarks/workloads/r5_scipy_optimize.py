#!/usr/bin/env python3
"""R5 scipy.optimize: a multiprocessing.Pool(os.cpu_count()) (the platform's default start method) fits
one logistic regression per task with scipy.optimize.minimize (L-BFGS-B, analytic gradient). Each task
makes its data in the worker; every loss and gradient is two matrix-vector products, which OpenBLAS
splits over its threads in each worker. Timed from creating the pool to joining it. Prints one
BENCH_RESULT JSON line (seconds) whose `answer` (every final loss) the harness compares with plain
python's."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


import _common  # noqa: E402


def fit(task):
    """Logistic regression on data made from `seed`: the final loss."""
    import numpy as np
    from scipy.optimize import minimize

    seed, rows, cols = task
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, cols))
    y = (X @ rng.standard_normal(cols) + rng.standard_normal(rows) > 0).astype(float)

    def loss_and_gradient(w):
        z = X @ w
        p = 1.0 / (1.0 + np.exp(-z))
        loss = np.logaddexp(0.0, z).sum() - y @ z + 0.5 * w @ w
        return loss, X.T @ (p - y) + w

    result = minimize(loss_and_gradient, np.zeros(cols), jac=True, method="L-BFGS-B",
                      options={"maxiter": 200, "gtol": 1e-8})
    return float(result.fun)


def main():
    p = _common.parser(__doc__)
    p.add_argument("--tasks", type=_common.positive_int, default=48, help="fits")
    p.add_argument("--rows", type=_common.positive_int, default=2000)
    p.add_argument("--cols", type=_common.positive_int, default=100)
    p.set_defaults(passes=1)
    args = p.parse_args()
    processes = args.pool or _common.cpu_count()
    tasks = [(args.seed * 1_000_003 + i, args.rows, args.cols) for i in range(args.tasks)]

    seconds, passes, answer = _common.process_pool_passes(args.impl, processes, args.passes, fit, tasks)
    _common.emit("R5", args.impl, processes, seconds, "s", passes=passes, tasks=len(tasks), answer=answer)


if __name__ == "__main__":
    main()
