#!/usr/bin/env python3
"""R1 grid search: scikit-learn's GridSearchCV over a HistGradientBoostingClassifier (whose fits run
OpenMP threads: scikit-learn's bundled libgomp) under joblib's threading or loky backend, n_jobs=2 or -1
as a user writes it. The joblib workers x OpenMP threads multiply. Timed: the fits after one untimed
warm-up fit. joblib keeps its loky workers between calls, so the issue's searches (tens of seconds)
hardly pay for their start; at make bench's size their start (a Python and scikit-learn imported in each)
would be most of the time, and n_jobs=1, which starts none, would win for that reason alone. Prints one
BENCH_RESULT JSON line (seconds) whose `answer` (the best parameters and every mean test score) the
harness compares with plain python's."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402


def main():
    p = _common.parser(__doc__)
    p.add_argument("--backend", choices=("threading", "loky"), required=True, help="joblib backend")
    p.add_argument("--n-jobs", type=int, default=-1, help="GridSearchCV's n_jobs (-1: every CPU joblib sees)")
    p.add_argument("--samples", type=_common.positive_int, default=3000)
    p.add_argument("--features", type=_common.positive_int, default=20)
    p.add_argument("--max-iter", type=_common.positive_int, default=40, help="boosting iterations per fit")
    p.add_argument("--cv", type=_common.positive_int, default=3)
    p.set_defaults(passes=1)
    args = p.parse_args()
    if args.impl not in ("stdlib", "threadpoolctl"):
        raise SystemExit(f"--impl {args.impl}: the joblib backend is this workload's subject (--backend)")
    n_jobs = args.pool or args.n_jobs  # --pool: the hand-tuned grid's n_jobs

    from joblib import parallel_config
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import GridSearchCV

    X, y = make_classification(n_samples=args.samples, n_features=args.features, n_informative=args.features // 2,
                               random_state=args.seed)
    grid = {"max_depth": [3, None], "learning_rate": [0.1, 0.3]}
    searches: list = []

    def one_pass():
        search = GridSearchCV(HistGradientBoostingClassifier(max_iter=args.max_iter, early_stopping=False,
                                                             random_state=args.seed),
                              grid, cv=args.cv, n_jobs=n_jobs)
        with _common.blas_limited_to_one_if(args.impl), parallel_config(backend=args.backend):
            searches.append(search.fit(X, y))

    one_pass()  # warm-up, untimed: loky's workers start and import scikit-learn here
    searches.clear()
    seconds = _common.timed_passes(args.passes, one_pass)
    last = searches[-1]
    _common.check(last.best_score_ > 0.5, f"best score {last.best_score_} is no better than chance")
    answer = {"best_params": sorted((k, str(v)) for k, v in last.best_params_.items()),
              "mean_test_score": [float(s) for s in last.cv_results_["mean_test_score"]]}
    _common.emit("R1", args.impl, n_jobs, sum(seconds), "s", passes=seconds, backend=args.backend,
                 fits=len(last.cv_results_["params"]) * args.cv, answer=answer)


if __name__ == "__main__":
    main()
