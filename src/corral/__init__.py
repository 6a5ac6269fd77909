"""corral: one CPU budget for every layer of parallelism in a Python program.

The public API is exactly `__all__`; every other module of the package is private (its name starts
with `_`) and may change without notice.

budget(env=None) -> Budget
    The process's CPU budget, read on each call (docs/budget.md): the affinity mask, capped by the
    cgroup CPU quota, replaced by CORRAL_CPUS when set. ValueError for a malformed CORRAL_CPUS.
    Budget.cpus is an int (the budget, B); Budget.cpu_ids the CPUs it may run on; .sources, .cores,
    .numa_nodes, .decided_by, .exceeds_hardware.
    Budget.to_dict() -> {"budget": int, "cpus": [int, ...], "decided_by", "exceeds_hardware",
    "sources", "cores", "numa_nodes"}. Mind the names: in the dict "budget" is Budget.cpus (the int)
    and "cpus" is the list of CPU ids (Budget.cpu_ids), as `python -m corral info --json` prints it.
BudgetSource
    One entry of Budget.sources: where one figure came from (affinity, a cgroup file, CORRAL_CPUS).
native_pools() -> list[dict]
    The BLAS/OpenMP libraries loaded now, as threadpoolctl lists them (docs/native.md): "library",
    "path", "version", "threading_layer", "num_threads", ...
ThreadPool, ThreadPoolExecutor, Future
    multiprocessing.pool.ThreadPool and concurrent.futures.ThreadPoolExecutor whose tasks run under
    the budget (docs/pools.md); Future is concurrent.futures.Future.
Pool, ProcessPoolExecutor
    multiprocessing.pool.Pool and concurrent.futures.ProcessPoolExecutor giving each worker process a
    share of the budget (docs/processes.md).
blocking
    Announce a wait inside a task (context manager and decorator).
patch
    Make the stdlib's pools corral's while active (context manager and decorator).
share(name="default", size=None) -> None
    Join a machine share: this process's permits beyond its first come from one pool for every corral
    process of the user that joins it (docs/share.md). ValueError/TypeError for a bad name or size,
    PermissionError when its directory or file is not private to the user.
__version__
    The package's version.
"""

# Every public name loads on first use (PEP 562): the pools, patch() and blocking import the stdlib's pool
# modules and corral's permits (some 40 ms), the rest the C extension (some 2 ms); `import corral`, which
# every child Python under the runner does, imports neither (docs/architecture.md, "Start-up").
_LAZY = {"ThreadPool": "corral._thread_pool", "ThreadPoolExecutor": "corral._executor", "Future": "corral._executor",
         "Pool": "corral._process_pool", "ProcessPoolExecutor": "corral._process_executor",
         "blocking": "corral._blocking", "patch": "corral._patch", "share": "corral._share",
         "budget": "corral._core", "Budget": "corral._core", "BudgetSource": "corral._core",
         "native_pools": "corral._core", "__version__": "corral._core"}
DEFERRED_IMPORTS = tuple(sorted(set(_LAZY.values())))  # tests/test_imports.py counts them in the module graph


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'corral' has no attribute {name!r}")
    import importlib  # here, not at the top: importlib imports warnings (a child Python's start)

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ThreadPool", "ThreadPoolExecutor", "Future", "Pool", "ProcessPoolExecutor",
    "blocking", "patch", "share",
    "budget", "Budget", "BudgetSource", "native_pools",
    "__version__",
]
