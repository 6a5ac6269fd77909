#!/usr/bin/env python3
"""R2 estimators: scikit-learn estimators fitted concurrently in a concurrent.futures.ThreadPoolExecutor
(os.cpu_count() workers), as a model-comparison script does: gradient boosting (OpenMP), logistic
regression and ridge (BLAS through scipy), k-means (OpenMP and BLAS), PCA (LAPACK), a random forest
(threads of its own when n_jobs is set: here not). Unequal tasks. Timed: submitting every fit to
collecting every score. Prints one BENCH_RESULT JSON line (seconds) whose `answer` (every score) the
harness compares with plain python's."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402


def _estimators(seed: int, max_iter: int) -> list:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, Ridge

    return [
        ("hist_gradient_boosting", lambda: HistGradientBoostingClassifier(max_iter=max_iter, early_stopping=False,
                                                                          random_state=seed)),
        ("logistic_regression", lambda: LogisticRegression(max_iter=500)),
        ("ridge", lambda: Ridge(alpha=1.0)),
        ("kmeans", lambda: KMeans(n_clusters=8, n_init=1, random_state=seed)),
        ("pca", lambda: PCA(n_components=10, random_state=seed)),
        ("random_forest", lambda: RandomForestClassifier(n_estimators=20, random_state=seed)),
    ]


def main():
    p = _common.parser(__doc__)
    p.add_argument("--samples", type=_common.positive_int, default=4000)
    p.add_argument("--features", type=_common.positive_int, default=40)
    p.add_argument("--copies", type=_common.positive_int, default=2, help="fits of each estimator (other data)")
    p.add_argument("--max-iter", type=_common.positive_int, default=40, help="gradient boosting iterations")
    p.set_defaults(passes=1)
    args = p.parse_args()
    workers = args.pool or _common.cpu_count()

    import numpy as np
    from sklearn.datasets import make_classification

    data = [make_classification(n_samples=args.samples, n_features=args.features,
                                n_informative=args.features // 2, random_state=args.seed + copy)
            for copy in range(args.copies)]
    tasks = [(name, make, copy) for copy in range(args.copies) for name, make in _estimators(args.seed, args.max_iter)]

    def fit(task):
        name, make, copy = task
        X, y = data[copy]
        model = make().fit(X, y)
        if name == "kmeans":
            return float(model.inertia_)
        if name == "pca":
            return float(model.explained_variance_ratio_.sum())
        return float(model.score(X, y))

    scores: list = []
    if args.impl.startswith("joblib-"):
        with _common.joblib_map(args.impl, workers) as pmap:
            seconds = _common.timed_passes(args.passes, lambda: scores.append(pmap(fit, tasks)))
    else:
        def one_pass():
            with _common.blas_limited_to_one_if(args.impl):
                futures = [pool.submit(fit, task) for task in tasks]
                scores.append([f.result() for f in futures])

        with _common.executor(args.impl, workers) as pool:
            seconds = _common.timed_passes(args.passes, one_pass)

    last = scores[-1]
    _common.check(len(last) == len(tasks) and all(np.isfinite(last)), "a fit went missing or is not finite")
    _common.emit("R2", args.impl, workers, sum(seconds), "s", passes=seconds, tasks=len(tasks),
                 answer=[round(s, 12) for s in last])


if __name__ == "__main__":
    main()
