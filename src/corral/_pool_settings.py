"""How corral's pools size the native (BLAS/OpenMP) threads of their tasks and workers.

Process-wide; corral.patch() and the `python -m corral` runner set them for the program.
  native: set BLAS/OpenMP thread limits as tasks start (False: never touch them).
  mode:   "dynamic": inner = max(1, budget // tasks running now), decided at each task start.
          "static":  inner = max(1, budget // pool size), fixed for a pool (SMP-like).
  factor: process pools' oversubscription factor (>= 1) when a pool is given none.
  force:  process pools give thread-limit variables the share even over a user's lower value, when a pool is given no `force`.
"""

from __future__ import annotations

import threading

MODES = ("dynamic", "static")

_lock = threading.Lock()
_settings = {"native": True, "mode": "dynamic", "factor": 1.0, "force": False}


def get() -> dict:
    with _lock:
        return dict(_settings)


def replace(**changes) -> dict:
    """Sets the given settings; returns the previous ones (for putting back)."""
    unknown = set(changes) - set(_settings)
    if unknown:
        raise TypeError(f"unknown pool settings: {', '.join(sorted(unknown))}")
    if "mode" in changes and changes["mode"] not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {changes['mode']!r}")
    if "factor" in changes:
        from .worker_share import validate_factor

        changes["factor"] = validate_factor(changes["factor"])
    if "force" in changes:
        changes["force"] = bool(changes["force"])
    with _lock:
        previous = dict(_settings)
        _settings.update(changes)
        return previous


def budget_cpus() -> int:
    """The process's CPU budget: corral.budget().cpus, at least 1."""
    from . import _core

    return max(1, int(_core.budget().cpus))


def inner_threads(pool_size: int) -> int:
    """The inner (BLAS/OpenMP) thread count for every task of a pool of `pool_size` built now
    (see _permits.run): 0 leaves the libraries alone, -1 applies
    max(1, budget // running tasks) as each task starts, n > 0 is n. Fixed for the pool's life:
    settings changed later (a patch that ends) apply to pools built later."""
    from . import _core, thread_limits

    settings = get()
    if not settings["native"]:
        return 0
    # A limit the user set (OMP_NUM_THREADS=1 ...) is an upper bound on every task's inner threads, the
    # budget's share another: the lower wins (docs/architecture.md, invariant 5). force: the share alone.
    budget = budget_cpus()
    cap = thread_limits.native_limit(budget, force=settings["force"])
    _core.set_inner_thread_cap(cap if cap < budget else 0)
    if settings["mode"] == "static":
        return max(1, budget // pool_size)
    return -1
