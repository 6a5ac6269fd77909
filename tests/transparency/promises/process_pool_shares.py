"""corral's promise beyond the stdlib (runner and patch modes only): each multiprocessing.Pool /
ProcessPoolExecutor worker gets its own share of the budget: disjoint CPU sets while workers <= CPUs,
and CORRAL_CPUS / OMP_NUM_THREADS set to the share's size."""
import os
import time
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor


def share(_):
    time.sleep(0.2)  # keeps both workers busy, so that both answer
    return (os.getpid(), tuple(sorted(os.sched_getaffinity(0))), os.environ.get("CORRAL_CPUS"),
            os.environ.get("OMP_NUM_THREADS"))


def summary(rows):
    by_pid = {r[0]: r[1:] for r in rows}
    cpusets = [set(v[0]) for v in by_pid.values()]
    disjoint = all(a.isdisjoint(b) for i, a in enumerate(cpusets) for b in cpusets[i + 1:])
    budgets = sorted({v[1] for v in by_pid.values()}, key=str)
    omp = sorted({v[2] for v in by_pid.values()}, key=str)
    return len(by_pid), disjoint, budgets, omp


if __name__ == "__main__":
    with mp.Pool(2) as pool:
        print("Pool(2): workers, disjoint, CORRAL_CPUS, OMP_NUM_THREADS:",
              summary(pool.map(share, range(4), chunksize=1)))
    with ProcessPoolExecutor(2) as ex:
        print("ProcessPoolExecutor(2): workers, disjoint, CORRAL_CPUS, OMP_NUM_THREADS:",
              summary(list(ex.map(share, range(4)))))
