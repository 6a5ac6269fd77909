"""The benchmark workloads as the harness sees them: which script, what sizes (from the CPU budget, so
the suite runs unchanged on 2 or 64 CPUs), what metric, which hand-tuning grid, and which
configurations do not apply to it and why. The scripts themselves live in benchmarks/workloads/."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from targets import AHEAD, BEST_HAND_TUNED, IDEAL_90, LEVEL, NO_SLOWER, STDLIB_1_5, STDLIB_LEVEL, Target

WORKLOAD_DIR = Path(__file__).resolve().parent / "workloads"

# Every variable a BLAS/OpenMP library reads for its thread count; the hand-tuned grid sets them all.
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One point of a hand-tuning grid: script arguments that size the pools, and BLAS threads (None: unset)."""

    args: tuple[tuple[str, int], ...]
    blas_threads: int | None

    def label(self) -> str:
        parts = [f"{name.lstrip('-')}={value}" for name, value in self.args]
        if self.blas_threads is not None:
            parts.append(f"BLAS={self.blas_threads}")
        return ", ".join(parts) or "defaults"


@dataclasses.dataclass(frozen=True)
class Workload:
    id: str
    title: str
    script: str
    measures: str
    higher_is_better: bool
    unit: str
    # (budget, quick) -> script arguments shared by every configuration
    args: Callable[[int, bool], dict[str, object]]
    # budget -> hand-tuning grid
    grid: Callable[[int], list[Setting]]
    # budget -> environment the workload itself sets (W3's emulated big machine)
    env: Callable[[int], dict[str, str]] = lambda budget: {}
    # configuration name -> why it does not apply here
    not_applicable: dict[str, str] = dataclasses.field(default_factory=dict)
    # options the corral runner gets for this workload (W4-16: --force over the claimed 16 CPUs)
    corral_options: tuple[str, ...] = ()
    # issue 12's targets for corral (targets.py); the report marks each met or not
    targets: tuple[Target, ...] = (LEVEL,)
    # at most this many repetitions (None: --reps), so that the costlier real-library workloads fit the budget
    max_reps: int | None = None
    # configuration name -> at most this many repetitions of it (W9's oversubscribed plain runs take 90-100 s
    # each and are 20-30x slower than the others: one run says what it has to)
    config_max_reps: dict[str, int] = dataclasses.field(default_factory=dict)
    # the script prints an `answer`; every configuration's must match plain's within this relative
    # tolerance (0: equal). None: the script checks its results itself.
    answer_rtol: float | None = None
    # run by --quick (which proves the harness) unless named in --workloads; False for near-duplicates
    in_quick: bool = True
    # A driver (W9) starts its programs itself: configuration name -> the driver's own arguments for it.
    # Configurations not listed here do not apply to it.
    driver_args: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @property
    def path(self) -> Path:
        return WORKLOAD_DIR / self.script

    @property
    def family(self) -> str:
        """`W4` for `W4-fork`: what --workloads W4 selects."""
        return self.id.split("-", 1)[0]


def _grid(pools, blas) -> list[Setting]:
    settings = []
    for pool in sorted(set(pools)):
        for threads in sorted(set(blas)) if blas else [None]:
            settings.append(Setting((("--pool", pool),), threads))
    return settings


def _pool_blas_grid(budget: int) -> list[Setting]:
    """The qr workloads' grid: pools of 1, budget and 2*budget against 1 or budget BLAS threads."""
    return _grid([1, budget, 2 * budget], [1, budget])


def emulated_cpus(budget: int) -> int:
    """The CPU count W3's container claims: 16 on small machines, always well above the real budget."""
    return max(16, 2 * budget)


NOT_CONCURRENT_FUTURES = ("tbb4py patches multiprocessing.pool.ThreadPool only; this workload uses "
                          "concurrent.futures, which it leaves alone (the run would be plain)")
NO_BLAS = "no BLAS calls in this workload: threadpool_limits would change nothing"
PROCESS_POOL_TBB = ("tbb4py does not patch multiprocessing.Pool, and cannot limit OpenBLAS "
                    "(it only drives MKL's TBB layer): the run would be plain")
THREADS_NOT_PROCESSES = "a thread backend measures thread pools (W1), not the process pools W4 is about"
LOKY_ONE_START_METHOD = "loky starts its workers its own way whatever the start method: measured once, in W4-spawn"
LOKY_FOR_WAITING = ("loky would start 32 worker processes only to wait on sockets: not a configuration "
                    "anyone would choose for I/O-bound tasks")


def _qr_args(arrays_per_cpu: int, n: int, passes: int, big: int = 0):
    # Sizes are kept modest so that the full suite fits 15 minutes on 2 CPUs (five repetitions of nine
    # configurations, oversubscribed ones included).
    def args(budget: int, quick: bool) -> dict[str, object]:
        sizes = ({"--arrays": 4 * budget, "--n": 96, "--big": 300 if big else 0, "--passes": 1} if quick
                 else {"--arrays": arrays_per_cpu * budget, "--n": n, "--big": big, "--passes": passes})
        if not big:
            del sizes["--big"]
        return sizes
    return args


def _w3_env(budget: int) -> dict[str, str]:
    claimed = str(emulated_cpus(budget))
    env = {name: claimed for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update({"PYTHON_CPU_COUNT": claimed, "LOKY_MAX_CPU_COUNT": claimed})
    return env


def _w3_args(budget: int, quick: bool) -> dict[str, object]:
    args = _qr_args(32, 256, 2)(budget, quick)  # W1's data, two passes
    args["--pool"] = emulated_cpus(budget)
    return args


def _w4(start_method: str, claimed: bool = False) -> Workload:
    def args(budget: int, quick: bool) -> dict[str, object]:
        if quick:
            return {"--start-method": start_method, "--tasks": 2 * budget, "--batch": 2, "--n": 96, "--passes": 1}
        return {"--start-method": start_method, "--tasks": 8 * budget, "--batch": 4, "--n": 256, "--passes": 3}

    not_applicable = {"tbb4py": PROCESS_POOL_TBB, "joblib-threading": THREADS_NOT_PROCESSES}
    if start_method == "fork" or claimed:
        not_applicable["joblib-loky"] = LOKY_ONE_START_METHOD
    if claimed:
        # The claimed 16 CPUs arrive as OPENBLAS/OMP/MKL_NUM_THREADS=16, which corral's process pools
        # keep as the user's own values unless told --force (the runner's option for exactly this).
        not_applicable["corral-api"] = ("the claimed CPUs are thread-limit variables, which corral.Pool keeps "
                                        "unless force=True; measured through the runner with --force")
        return Workload(
            id="W4-claimed", title=f"processes, {start_method}, libraries told 16 CPUs",
            script="w4_processes.py",
            measures=f"W4-{start_method} with OPENBLAS/OMP/MKL_NUM_THREADS=16 (a container claiming 16 CPUs); "
                     "corral runs with --force so that its shares replace the claimed 16",
            higher_is_better=False, unit="s", args=args, env=_w3_env,
            grid=_pool_blas_grid, not_applicable=not_applicable,
            corral_options=("--force",))
    return Workload(
        id=f"W4-{start_method}", title=f"processes ({start_method})", script="w4_processes.py",
        measures=f"multiprocessing.Pool(ncpu) under {start_method}; tasks run qr on 256x256 batches; "
                 "pool start-up to join",
        higher_is_better=False, unit="s", args=args,
        grid=_pool_blas_grid, not_applicable=not_applicable)


def _w5_args(budget: int, quick: bool) -> dict[str, object]:
    if quick:
        return {"--tasks": 64, "--delay-ms": 20, "--passes": 1}
    return {"--tasks": 160, "--delay-ms": 20, "--passes": 2}


def _w6_args(budget: int, quick: bool) -> dict[str, object]:
    # --n (the matrix side) is filled in by the harness's calibration.
    if quick:
        return {"--tasks": 4 * budget, "--wait-ms": 5, "--passes": 1}
    return {"--tasks": 30 * budget, "--wait-ms": 5, "--passes": 2}


def _w7_args(budget: int, quick: bool) -> dict[str, object]:
    if quick:
        return {"--outer-tasks": budget, "--inner-arrays": 4, "--n": 96, "--passes": 1}
    return {"--outer-tasks": 2 * budget, "--inner-arrays": 8, "--n": 256, "--passes": 2}


def _w7_grid(budget: int) -> list[Setting]:
    settings = []
    for outer in sorted({1, budget}):
        for inner in sorted({1, budget}):
            for threads in sorted({1, budget}):
                settings.append(Setting((("--pool", outer), ("--inner-pool", inner)), threads))
    return settings


def _w8_args(budget: int, quick: bool) -> dict[str, object]:
    return {"--tasks": 5_000 if quick else 100_000, "--passes": 1}


def _w8_grid(budget: int) -> list[Setting]:
    # No --pool at all is the stdlib's own default size, min(32, cpu_count + 4).
    return [Setting((), None)] + [Setting((("--pool", p),), None) for p in sorted({1, budget})]


def _w9_args(budget: int, quick: bool) -> dict[str, object]:
    # Each copy is W1's program with more passes, so that one copy runs for seconds, not a fraction of
    # one (start-up would hide the difference); four of them share the machine. Plain's four copies
    # oversubscribe it badly (37 s for 3 passes on a loaded 2-CPU VM): 5 passes keep plain under the
    # harness's 120 s timeout.
    if quick:
        return {"--copies": 4, "--arrays": 4 * budget, "--n": 96, "--passes": 1}
    return {"--copies": 4, "--arrays": 32 * budget, "--n": 256, "--passes": 5}


SIDE_BY_SIDE = ("four programs side by side each run as the configuration says; per-program settings (a tuned "
                "grid, a pool library) are W1's columns")


def _w9(make: bool) -> Workload:
    drivers = ({"plain": ("--make", "--runner", "plain"), "corral": ("--make", "--runner", "corral")} if make else
               {"plain": ("--runner", "plain"), "corral": ("--runner", "corral"),
                "corral-share": ("--runner", "share")})
    return Workload(
        id="W9-make" if make else "W9", title="make -j4 of four programs" if make else "four programs side by side",
        script="w9_side_by_side.py",
        measures=("four copies of W1 (5 passes each) as targets of make -j4, recipes marked '+': plain, and "
                  "corral drawing from make's jobserver; time until all four finish" if make else
                  "four copies of W1 (5 passes each) started at once: plain, corral with four budgets, corral "
                  "with one machine share (--share); time until all four finish"),
        higher_is_better=False, unit="s", args=_w9_args, grid=lambda budget: [],
        driver_args=drivers, max_reps=3, config_max_reps={"plain": 1})


WORKLOADS: list[Workload] = [
    Workload(
        id="W1", title="balanced", script="w1_balanced.py",
        measures="the seed's demo: ThreadPool(ncpu).map(np.linalg.qr, 32*budget arrays of 256x256), 3 passes",
        higher_is_better=False, unit="s", args=_qr_args(32, 256, 3),
        grid=_pool_blas_grid),
    Workload(
        id="W2", title="unbalanced", script="w2_unbalanced.py",
        measures="W1's arrays plus one 2000x2000 array in the middle of the list, 1 pass",
        higher_is_better=False, unit="s", args=_qr_args(32, 256, 1, big=2000),
        grid=_pool_blas_grid, targets=(AHEAD,)),
    Workload(
        id="W3", title="emulated big machine", script="w3_emulated_big_machine.py",
        measures="W1 with a pool of 16 and OPENBLAS/OMP/MKL_NUM_THREADS=16 (a container claiming 16 CPUs), "
                 "CORRAL_CPUS unset, 2 passes",
        higher_is_better=False, unit="s", args=_w3_args, env=_w3_env,
        grid=_pool_blas_grid),
    _w4("fork"),
    _w4("spawn"),
    _w4("fork", claimed=True),
    Workload(
        id="W5", title="I/O-bound", script="w5_io_bound.py",
        measures="ThreadPool(32); each task waits ~20 ms on a loopback echo server, then hashes the answer",
        higher_is_better=False, unit="s", args=_w5_args,
        grid=lambda b: _grid([2 * b, 32, 64, 128], []),
        not_applicable={"joblib-loky": LOKY_FOR_WAITING}),
    Workload(
        id="W6", title="I/O plus compute", script="w6_io_compute.py",
        measures="ThreadPool(4*ncpu); each task ~5 ms matmul (GIL released, calibrated) then ~5 ms sleep; "
                 "throughput against budget cores fully busy",
        higher_is_better=True, unit="tasks/s", args=_w6_args,
        grid=lambda b: _grid([b, 2 * b, 4 * b], [1, b]), targets=(LEVEL, IDEAL_90, BEST_HAND_TUNED)),
    Workload(
        id="W7", title="nested", script="w7_nested.py",
        measures="ThreadPoolExecutor(ncpu) whose tasks each map qr over their own inner ThreadPoolExecutor(ncpu), "
                 "2 passes",
        higher_is_better=False, unit="s", args=_w7_args, grid=_w7_grid,
        not_applicable={"tbb4py": NOT_CONCURRENT_FUTURES}),
    Workload(
        id="W8", title="overhead", script="w8_overhead.py",
        measures="100,000 tiny tasks: ThreadPoolExecutor() submit all, then every result; tasks per second",
        higher_is_better=True, unit="tasks/s", args=_w8_args, grid=_w8_grid,
        not_applicable={"tbb4py": NOT_CONCURRENT_FUTURES, "threadpoolctl": NO_BLAS}, targets=(LEVEL, STDLIB_1_5)),
    _w9(make=False),
    _w9(make=True),
]


JOBLIB_BATCHES = ("joblib batches tiny items itself (its automatic batch size), not one item per task: another "
                  "workload; W8 measures joblib on tiny tasks")

WORKLOADS.append(Workload(
    id="W11", title="imap overhead", script="w11_imap.py",
    measures="1,000,000 tiny items: sum(ThreadPool().imap_unordered(f, range(N))), one item per task; items per "
             "second",
    higher_is_better=True, unit="items/s",
    args=lambda budget, quick: {"--items": 20_000 if quick else 1_000_000, "--passes": 1},
    grid=lambda budget: [Setting((("--pool", p),), None) for p in sorted({1, budget})],
    not_applicable={"threadpoolctl": NO_BLAS, "joblib-threading": JOBLIB_BATCHES, "joblib-loky": JOBLIB_BATCHES,
                    "tbb4py": "tbb4py's Pool runs this at about 21,000 items/s (200,000 items, 9.6 s here): 0.07x "
                              "plain; not run at a million, to keep make bench within its time budget"},
    targets=(STDLIB_LEVEL,), max_reps=3))


DASK_CLUSTER = ("Dask workers are processes of their own: a limit in the client process, a thread backend or "
                "a TBB pool in it does not reach them")


def _w10(shape: str, kind: str) -> Workload:
    def args(budget: int, quick: bool) -> dict[str, object]:
        workers, threads = (budget, 1) if shape == "2w" else (1, budget)
        sizes = ({"--tasks": 4 * budget, "--n": 96, "--big": 300, "--calls": 2, "--passes": 1} if quick
                 else {"--tasks": 16 * budget, "--n": 384, "--big": 1000, "--calls": 4, "--passes": 2})
        # One large task more than the budget's threads: the last one runs alone at the end.
        out = {"--workers": workers, "--threads": threads, "--kind": kind, "--bigs": budget + 1, **sizes}
        if kind == "balanced":
            for large in ("--big", "--bigs", "--calls"):
                del out[large]
        return out

    cluster = ("LocalCluster(n_workers=budget, threads_per_worker=1)" if shape == "2w"
               else "LocalCluster(n_workers=1, threads_per_worker=budget)")
    work = ("16 x budget matmuls of 384x384" if kind == "balanced"
            else "16 x budget matmuls of 384x384 with budget + 1 large tasks among them (4 products of "
                 "1000x1000 each; the last one at the end)")
    return Workload(
        id=f"W10-{shape}-{kind}", title=f"Dask, {'budget workers' if shape == '2w' else 'one worker'}, {kind}",
        script="w10_dask.py",
        measures=f"{cluster} maps {work} (each task makes its own matrix), 2 passes, cluster start-up excluded; "
                 "plain is Dask's defaults (its nanny's OMP/MKL/OPENBLAS_NUM_THREADS=1), hand-tuned is Dask "
                 "with those variables unset",
        higher_is_better=False, unit="s", args=args,
        # One point: the "Dask with the thread variables unset" column.
        grid=lambda budget: [Setting((("--unset-thread-vars", 1),), None)],
        not_applicable={"threadpoolctl": DASK_CLUSTER, "tbb4py": DASK_CLUSTER, "joblib-threading": DASK_CLUSTER,
                        "joblib-loky": DASK_CLUSTER,
                        "corral-static": "a Dask worker's shares are the same in both modes; not run, to keep "
                                         "make bench within its time budget"},
        targets=(AHEAD,) if kind == "unbalanced" else (LEVEL,))


WORKLOADS += [_w10(shape, kind) for shape in ("2w", "1w") for kind in ("balanced", "unbalanced")]


# The real-library workloads (issue 12): what a new user writes with scikit-learn, dask, scipy and pandas.
RUNNER_ONLY = ("the real-library workloads measure corral as a new user starts it, `python -m corral`; static mode "
               "and the API are measured on W1-W8")
BACKEND_IS_THE_SUBJECT = "the joblib backend is this workload's subject: each backend is a workload of its own"
DASK_SCHEDULES = "dask's threaded scheduler is this workload's pool: there is no pool to replace by joblib"
TBB_JOBLIB_THREADING = ("`python -m tbb` breaks joblib's threading backend: its Pool.apply_async takes no "
                        "error_callback, which joblib passes (TypeError)")
NO_POOLS = "no pools: this workload compares `python -m corral` with plain python only (target: within 3%)"
REAL_REPS = 3


def _simple_grid(budget: int) -> list[Setting]:
    """The two settings a user tries first: the pool on every CPU with one BLAS/OpenMP thread per task,
    or one task at a time with every CPU for the libraries."""
    return [Setting((("--pool", budget),), 1), Setting((("--pool", 1),), budget)]


def _real(id: str, title: str, script: str, measures: str, args, not_applicable: dict[str, str],
          answer_rtol: float, targets: tuple[Target, ...] = (LEVEL,)) -> Workload:
    not_applicable = {"corral-static": RUNNER_ONLY, "corral-api": RUNNER_ONLY} | not_applicable
    return Workload(id=id, title=title, script=script, measures=measures, higher_is_better=False, unit="s",
                    args=args, grid=_simple_grid, not_applicable=not_applicable, targets=targets,
                    max_reps=REAL_REPS, answer_rtol=answer_rtol)


def _r1(backend: str, n_jobs: int) -> Workload:
    def args(budget: int, quick: bool) -> dict[str, object]:
        sizes = ({"--samples": 600, "--max-iter": 5, "--cv": 2} if quick
                 else {"--samples": 1500, "--max-iter": 15, "--cv": 3})
        return {"--backend": backend, "--n-jobs": n_jobs} | sizes

    not_applicable = {"joblib-threading": BACKEND_IS_THE_SUBJECT, "joblib-loky": BACKEND_IS_THE_SUBJECT}
    not_applicable["tbb4py"] = PROCESS_POOL_TBB if backend == "loky" else TBB_JOBLIB_THREADING
    jobs = "all" if n_jobs == -1 else str(n_jobs)
    workload = _real(f"R1-{backend}-{jobs}", f"GridSearchCV, {backend}, n_jobs={n_jobs}", "r1_grid_search.py",
                     f"GridSearchCV(HistGradientBoostingClassifier (OpenMP), 4 settings x 3 folds, n_jobs={n_jobs}) "
                     f"under joblib's {backend} backend", args, not_applicable, answer_rtol=1e-9)
    # On a quick check n_jobs=-1 runs the same code as n_jobs=2.
    return dataclasses.replace(workload, in_quick=n_jobs != -1)


def _r2_args(budget: int, quick: bool) -> dict[str, object]:
    return {"--samples": 800, "--copies": 1, "--max-iter": 5} if quick else {"--samples": 4000, "--copies": 2}


def _r3_args(budget: int, quick: bool) -> dict[str, object]:
    return {"--n": 600, "--chunk": 300} if quick else {"--n": 2000, "--chunk": 500}


def _r4_args(budget: int, quick: bool) -> dict[str, object]:
    return {"--arrays": 4 * budget, "--n": 96} if quick else {"--arrays": 32 * budget, "--n": 256}


def _r5_args(budget: int, quick: bool) -> dict[str, object]:
    return {"--tasks": 2 * budget, "--rows": 500} if quick else {"--tasks": 16 * budget, "--rows": 2000}


def _r6_args(budget: int, quick: bool) -> dict[str, object]:
    return {"--tasks": 2 * budget, "--rows": 5000} if quick else {"--tasks": 8 * budget, "--rows": 60_000}


def _n1_args(budget: int, quick: bool) -> dict[str, object]:
    return ({"--scale": 0.1, "--matmul-n": 200, "--matmuls": 2, "--passes": 1} if quick
            else {"--scale": 1.0, "--matmul-n": 800, "--matmuls": 5, "--passes": 3})


REAL_WORKLOADS: list[Workload] = [
    _r1("threading", 2), _r1("threading", -1), _r1("loky", 2), _r1("loky", -1),
    _real("R2", "estimators in a ThreadPoolExecutor", "r2_estimators.py",
          "2 x 6 scikit-learn estimators (gradient boosting, logistic regression, ridge, k-means, PCA, random "
          "forest) fitted concurrently in ThreadPoolExecutor(ncpu); unequal tasks", _r2_args,
          {"tbb4py": NOT_CONCURRENT_FUTURES}, answer_rtol=1e-6, targets=(AHEAD,)),
    _real("R3", "dask.array matmul", "r3_dask_matmul.py",
          "dask.array `(x @ x.T).sum()`, x 2000x2000 in 500x500 chunks, threaded scheduler", _r3_args,
          {"tbb4py": NOT_CONCURRENT_FUTURES, "joblib-threading": DASK_SCHEDULES, "joblib-loky": DASK_SCHEDULES},
          answer_rtol=1e-9),
    _real("R4", "scipy.linalg in a thread pool", "r4_scipy_linalg.py",
          "ThreadPool(ncpu).map(scipy.linalg.eigh, 32*budget symmetric 256x256 arrays) (scipy's own OpenBLAS)",
          _r4_args, {}, answer_rtol=1e-9),
    _real("R5", "scipy.optimize in a Pool", "r5_scipy_optimize.py",
          "multiprocessing.Pool(ncpu).map: 16*budget logistic regressions by scipy.optimize.minimize "
          "(L-BFGS-B, 2000x100 data, matrix-vector products); pool start-up to join", _r5_args,
          {"tbb4py": PROCESS_POOL_TBB, "joblib-threading": THREADS_NOT_PROCESSES}, answer_rtol=1e-6),
    _real("R6", "pandas groupby-apply in a Pool", "r6_pandas_groupby.py",
          "multiprocessing.Pool(ncpu).map: 8*budget chunks of 60,000 rows, groupby(400 keys).apply(lstsq); "
          "pool start-up to join", _r6_args,
          {"tbb4py": PROCESS_POOL_TBB, "joblib-threading": THREADS_NOT_PROCESSES}, answer_rtol=1e-9),
    Workload(
        id="N1", title="no pools", script="n1_no_pools.py",
        measures="a main-thread loop, no pools: np.linalg.qr on 128, 256 and 512 matrices, then 5 matmuls "
                 "800x800; 3 passes",
        higher_is_better=False, unit="s", args=_n1_args, grid=lambda budget: [],
        not_applicable={name: NO_POOLS for name in ("hand-tuned", "threadpoolctl", "tbb4py", "joblib-threading",
                                                    "joblib-loky", "corral-static", "corral-api",
                                                    "corral-share")},
        targets=(NO_SLOWER,), answer_rtol=1e-9),
]
WORKLOADS += REAL_WORKLOADS
# A program without pools whose children are Pythons: what corral's start-up costs each of them (no answer to
# check: the children print nothing).
WORKLOADS.append(Workload(
    id="N2", title="child Pythons", script="n2_child_pythons.py",
    measures="a program without pools that starts 40 `python -c pass` children one after another with "
             "subprocess (under corral each joins the budget); milliseconds per child",
    higher_is_better=False, unit="ms", args=lambda budget, quick: {"--children": 10 if quick else 40,
                                                                   "--passes": 1 if quick else 3},
    grid=lambda budget: [],
    not_applicable={name: NO_POOLS for name in ("hand-tuned", "threadpoolctl", "tbb4py", "joblib-threading",
                                                "joblib-loky", "corral-static", "corral-api",
                                                "corral-share")},
    targets=(NO_SLOWER,)))


def thinned(grid: list[Setting], keep: int) -> list[Setting]:
    """At most `keep` points spread over the grid, first and last included (quick mode tunes these)."""
    if keep < 2 or len(grid) <= keep:
        return list(grid[:max(keep, 1)]) if keep < 2 else list(grid)
    step = (len(grid) - 1) / (keep - 1)
    return [grid[round(i * step)] for i in range(keep)]


def select(spec: str | None, quick: bool = False) -> list[Workload]:
    """Workloads named in a comma-separated list (`W1,W4` selects W1, W4-fork and W4-spawn); all when None
    (in quick mode those marked in_quick)."""
    if not spec:
        return [w for w in WORKLOADS if w.in_quick or not quick]
    wanted = [name.strip().upper() for name in spec.split(",") if name.strip()]
    known = {w.id.upper() for w in WORKLOADS} | {w.family.upper() for w in WORKLOADS}
    unknown = [name for name in wanted if name not in known]
    if unknown or not wanted:
        raise ValueError(f"unknown workload(s) {', '.join(unknown) or spec!r}; "
                         f"choose from {', '.join(w.id for w in WORKLOADS)}")
    return [w for w in WORKLOADS if w.id.upper() in wanted or w.family.upper() in wanted]
