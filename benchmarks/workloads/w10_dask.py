#!/usr/bin/env python3
"""W10 Dask: a LocalCluster of worker processes maps numpy matmuls, each task making its own matrix.

    with LocalCluster(n_workers=W, threads_per_worker=T) as cluster, Client(cluster) as client:
        client.gather(client.map(matmul, sizes))

--kind balanced: many equal matmuls. --kind unbalanced: a few large tasks among many small ones, the
last of them at the end of the list, so that the large one that runs last runs alone and should get the
BLAS threads the idle worker threads no longer use (Dask's nanny fixes OMP/MKL/OPENBLAS_NUM_THREADS=1 in
every worker; --unset-thread-vars 1 removes that, and each worker's BLAS then sizes itself for the whole
machine). A large task is --calls products in a row, as a real computation makes several BLAS calls: a
library's thread count is fixed for the length of one call, so only a call that starts after the other
threads went idle can use them, whatever sets the count. Timed: the passes over the task list, cluster
start-up excluded. Prints one BENCH_RESULT JSON line.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common  # noqa: E402


def matmul(n: int, seed: int, calls: int = 1) -> float:
    """`calls` products of one n x n matrix with itself (the sum of their corners)."""
    a = np.random.default_rng(seed).random((n, n))
    return sum(float((a @ a)[0, 0]) for _ in range(calls))


def sizes(kind: str, tasks: int, n: int, big: int, bigs: int) -> list[int]:
    if kind == "balanced":
        return [n] * tasks
    out = [n] * tasks
    for i in range(bigs):  # spread through the list, the last one at its end
        out.insert((i + 1) * len(out) // bigs, big)
    return out


def corral_in_play(impl: str) -> bool:
    return impl == "corral" or "CORRAL_CHILDREN" in os.environ


def settle(client, workers: int, timeout: float = 15.0) -> None:
    """corral's workers re-read their shares every 0.5 s: wait until each has its own CPUs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = client.run(lambda: sorted(os.sched_getaffinity(0)))
        cpus = [c for s in seen.values() for c in s]
        if len(seen) == workers and len(cpus) == len(set(cpus)):
            return
        time.sleep(0.2)


def main() -> None:
    # stdlib: Dask as it is; corral: corral.dask's worker plugin registered. Dask sizes its own pools.
    p = _common.parser(__doc__, impls=("stdlib", "corral"), pool=False)
    p.add_argument("--workers", type=_common.positive_int, default=2, help="worker processes (default: 2)")
    p.add_argument("--threads", type=_common.positive_int, default=1, help="threads per worker (default: 1)")
    p.add_argument("--kind", choices=("balanced", "unbalanced"), default="balanced", help="(default: balanced)")
    p.add_argument("--tasks", type=_common.positive_int, default=32,
                   help="equal (small) tasks per pass (default: 32)")
    p.add_argument("--n", type=_common.positive_int, default=384, help="side of each small matrix (default: 384)")
    p.add_argument("--big", type=_common.positive_int, default=1000,
                   help="side of each large matrix (unbalanced; default: 1000)")
    p.add_argument("--bigs", type=_common.positive_int, default=3,
                   help="large tasks per pass (unbalanced; default: 3)")
    p.add_argument("--calls", type=_common.positive_int, default=4,
                   help="products a large task makes in a row (default: 4)")
    p.add_argument("--unset-thread-vars", type=int, choices=(0, 1), default=0,
                   help="1: Dask's nanny sets no OMP/MKL/OPENBLAS_NUM_THREADS in its workers (default: 0)")
    args = p.parse_args()

    import dask.config
    from dask.distributed import Client, LocalCluster

    if args.unset_thread_vars:
        dask.config.set({f"distributed.nanny.pre-spawn-environ.{var}": None
                         for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    work = sizes(args.kind, args.tasks, args.n, args.big, args.bigs)
    seeds = list(range(args.seed, args.seed + len(work)))
    calls = [args.calls if n == args.big and args.kind == "unbalanced" else 1 for n in work]
    with LocalCluster(n_workers=args.workers, threads_per_worker=args.threads, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.wait_for_workers(args.workers)
        if args.impl == "corral":
            import corral.dask

            client.register_plugin(corral.dask.CorralWorkerPlugin())
        if corral_in_play(args.impl):
            settle(client, args.workers)
        warm = 4 * args.workers * args.threads
        client.gather(client.map(matmul, [64] * warm, range(warm), pure=False))  # numpy loaded in every worker
        last: list = []

        def one_pass():
            last[:] = client.gather(client.map(matmul, work, seeds, calls, pure=False))

        seconds = _common.timed_passes(args.passes, one_pass)
        blas = client.run(_common.blas_threads)

    _common.check(len(last) == len(work), f"{len(last)} results for {len(work)} tasks")
    _common.check(np.isclose(last[0], matmul(work[0], seeds[0], calls[0])), "the first product differs")
    if args.kind == "unbalanced":
        i = work.index(args.big)
        _common.check(np.isclose(last[i], matmul(work[i], seeds[i], calls[i])), "the first large product differs")
    _common.emit("W10", args.impl, args.workers * args.threads, sum(seconds), "s", passes=seconds,
                 tasks=len(work), large_tasks=len(work) - work.count(args.n) if args.kind == "unbalanced" else 0,
                 workers=args.workers, threads=args.threads, kind=args.kind,
                 worker_blas=list(blas.values()))


if __name__ == "__main__":
    main()
