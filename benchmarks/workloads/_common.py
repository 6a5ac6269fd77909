"""Plumbing shared by the benchmark workloads: arguments, the pool implementations under test, the result line
(written here, read back by the harness with read_result).

Every workload is a standalone script that benchmarks/run.py starts in a fresh interpreter, so that
environment variables (OPENBLAS_NUM_THREADS...) are read before numpy loads and so that
`python -m corral workload.py` or `python -m tbb workload.py` runs it unmodified. With the default
`--impl stdlib` a workload uses only the standard library pools, looked up at call time, so that a
runner that patches them (corral, tbb4py) is what gets measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any, Callable, Iterator

# The harness finds the result among whatever else a runner prints by this prefix.
RESULT_PREFIX = "BENCH_RESULT "

IMPLS = ("stdlib", "threadpoolctl", "joblib-threading", "joblib-loky", "corral")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parser(description: str, impls: tuple[str, ...] = IMPLS, pool: bool = True) -> argparse.ArgumentParser:
    """The arguments every workload takes (`impls`: the implementations it runs; `pool`: whether it has a
    pool size to set); a workload adds its own sizes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--impl", choices=impls, default="stdlib",
                   help="which pool implementation runs the tasks (default: the standard library's)")
    if pool:
        p.add_argument("--pool", type=positive_int, default=None,
                       help="pool size (default: what the unmodified program uses, usually os.cpu_count())")
    p.add_argument("--passes", type=positive_int, default=3, help="timed passes over the same data (default: 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data (default: 0)")
    return p


def cpu_count() -> int:
    """What an unmodified program would size its pool from."""
    return os.cpu_count() or 1


@contextlib.contextmanager
def thread_map(impl: str, processes: int) -> Iterator[Callable[[Callable, list], list]]:
    """Yield map(fn, items) -> list run by a thread pool of `processes` from the implementation `impl`."""
    if impl.startswith("joblib-"):
        with joblib_map(impl, processes) as mapper:
            yield mapper
    else:
        with blas_limited_to_one_if(impl), thread_pool(impl, processes) as pool:
            yield pool.map


@contextlib.contextmanager
def thread_pool(impl: str, processes: int | None) -> Iterator:
    """A multiprocessing.pool.ThreadPool of `processes` (None: its default size) from `impl` (corral's, else
    the one the module has now: runners patch the module attribute), as a context."""
    if impl == "corral":
        import corral

        with corral.ThreadPool(processes) as pool:
            yield pool
    else:
        import multiprocessing.pool  # looked up now: runners patch the module attribute

        with multiprocessing.pool.ThreadPool(processes) as pool:
            yield pool


def tiny(x: int) -> int:
    """The task of W8 and W11: next to nothing, so that what is measured is the pool's cost per task."""
    return x * 2 + 1


def executor(impl: str, workers: int | None):
    """A concurrent.futures executor of `workers` (None: the implementation's default size) from `impl`."""
    if impl == "corral":
        import corral

        return corral.ThreadPoolExecutor(workers)
    import concurrent.futures  # looked up now: runners patch the module attribute

    return concurrent.futures.ThreadPoolExecutor(workers)


@contextlib.contextmanager
def joblib_map(impl: str, n_jobs: int) -> Iterator[Callable[[Callable, list], list]]:
    """Parallel(n_jobs, backend)(delayed(fn)(x) for x in items), with the workers kept across calls."""
    from joblib import Parallel, delayed

    backend = {"joblib-threading": "threading", "joblib-loky": "loky"}[impl]
    with Parallel(n_jobs=n_jobs, backend=backend) as parallel:
        yield lambda fn, items: parallel(delayed(fn)(x) for x in items)


def blas_limited_to_one_if(impl: str):
    """threadpoolctl's recipe, `with threadpool_limits(1):` around the pool, when that is what is measured."""
    if impl != "threadpoolctl":
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def timed_passes(passes: int, run_once: Callable[[], Any]) -> list[float]:
    """Seconds of each pass of run_once() (the same work each time)."""
    seconds = []
    for _ in range(passes):
        start = time.perf_counter()
        run_once()
        seconds.append(time.perf_counter() - start)
    return seconds


def process_pool_passes(impl: str, processes: int, passes: int, fn: Callable, tasks: list) -> tuple[float, list, list]:
    """`passes` maps of fn over tasks in a process pool (multiprocessing.Pool, or joblib's for the joblib-*
    impls), each pass checked to return a result per task: (seconds in all, pass times, last results)."""
    import multiprocessing

    results: list = []
    start = time.perf_counter()
    if impl.startswith("joblib-"):
        with joblib_map(impl, processes) as pmap:
            times = timed_passes(passes, lambda: results.append(pmap(fn, tasks)))
    else:
        with blas_limited_to_one_if(impl), multiprocessing.Pool(processes) as pool:
            times = timed_passes(passes, lambda: results.append(pool.map(fn, tasks)))
            pool.close()
            pool.join()
    seconds = time.perf_counter() - start
    check(all(len(r) == len(tasks) for r in results), "a pass lost results")
    return seconds, times, results[-1]


def blas_threads() -> list[dict]:
    """The thread count each loaded BLAS/OpenMP library reports at the end of the run (what limits applied)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{"api": i.get("internal_api"), "num_threads": i.get("num_threads")} for i in threadpool_info()]


def emit(workload: str, impl: str, pool: int, value: float, unit: str, **extra: Any) -> None:
    """Print the one result line the harness reads: the headline value plus whatever explains it."""
    record = {
        "workload": workload,
        "impl": impl,
        "pool": pool,
        "value": value,
        "unit": unit,
        "blas": blas_threads(),
        "thread_env": {k: v for k, v in os.environ.items() if k.endswith("_NUM_THREADS") or k.startswith("CORRAL_")},
    }
    record.update(extra)
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(record), flush=True)


def read_result(stdout: str) -> dict | None:
    """The record of the last result line in a run's output; None when there is none, ValueError when it is not
    JSON."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return None


def check(condition: bool, message: str) -> None:
    """Fail the run (non-zero exit, reason on stderr) when a workload computed something wrong."""
    if not condition:
        raise SystemExit(f"workload check failed: {message}")
