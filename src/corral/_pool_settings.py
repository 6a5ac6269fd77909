"""How corral's pools size the native (BLAS/OpenMP) threads of their tasks and workers.

Process-wide; corral.patch() and the `python -m corral` runner set them for the program.
  native: set BLAS/OpenMP thread limits as tasks start (False: never touch them).
  mode:   "dynamic" or "static", how a thread pool's tasks get their inner threads (docs/native.md,
          "Inner thread counts").
  factor: process pools' oversubscription factor (>= 1) when a pool is given none.
  force:  process pools give thread-limit variables the share even over a user's lower value, when a
          pool is given no `force`.
"""

import _thread
import numbers

from . import _thread_limits

MODES = ("dynamic", "static")

# The inner-thread count a pool's tasks run with, as _permits.run takes it (bindings/bind_permits.cpp
# run_permitted takes a plain int; these names are the only place its 0 and -1 are spelled): a fixed
# count is any n > 0.
LEAVE_ALONE = 0  # the libraries' limits are left as they are (--no-native, corral.patch(native=False))
DYNAMIC = -1  # the dynamic rule, decided as each task starts

_lock = _thread.allocate_lock()  # threading.Lock, without importing threading (docs/architecture.md, "Start-up")
_settings = {"native": True, "mode": "dynamic", "factor": 1.0, "force": False}


CORE = "corral._core"
DEFERRED_IMPORTS = (CORE,)  # tests/test_imports.py counts it in the module graph


def _core():
    """The C extension, imported on first use: a child Python's start needs these settings, not it (some 2 ms)."""
    import importlib

    return importlib.import_module(CORE)


def validate_factor(factor: float) -> float:
    """An oversubscription factor as a float: TypeError for what is not a real number or a Decimal (a
    string too: the runner converts its option's text first; a bool too, which is an int to Python but
    never meant as a factor), ValueError for one below 1, infinite or nan."""
    # Decimal is a Number but not a Complex (it does not mix with floats); complex numbers are not real.
    real = isinstance(factor, numbers.Real) or (
        isinstance(factor, numbers.Number) and not isinstance(factor, numbers.Complex))
    if isinstance(factor, bool) or not real:
        raise TypeError(f"factor must be a number >= 1, not {factor!r}")
    value = float(factor)
    if not value >= 1.0 or value == float("inf"):
        raise ValueError(f"factor must be a finite number >= 1, not {factor!r}")
    return value


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
        changes["factor"] = validate_factor(changes["factor"])
    if "force" in changes:
        changes["force"] = bool(changes["force"])
    with _lock:
        previous = dict(_settings)
        _settings.update(changes)
        return previous


def budget_cpus() -> int:
    """The process's CPU budget: corral.budget().cpus, at least 1."""
    return max(1, int(_core().budget().cpus))


def inner_threads(pool_size: int) -> int:
    """The inner (BLAS/OpenMP) thread count for every task of a pool of `pool_size` built now, as
    _permits.run takes it: LEAVE_ALONE, DYNAMIC, or a fixed n > 0 (static mode).
    Fixed for the pool's life: settings changed later (a patch that ends) apply to pools built later.
    Also sets the process's cap on dynamic counts from the user's *_NUM_THREADS (docs/native.md,
    "Inner thread counts")."""
    settings = get()
    if not settings["native"]:
        return LEAVE_ALONE
    # The permit table's count, which the dynamic rule divides too: the budget as the table read it once
    # (or a Dask worker's share). Reading the budget again (cgroup files) took 2/3 of a pool's making.
    core = _core()
    budget = core.permits()
    cap = _thread_limits.native_limit(budget, force=settings["force"])
    core.set_inner_thread_cap(cap if cap < budget else 0)  # the binding's 0: no cap
    if settings["mode"] == "static":
        return max(1, budget // pool_size)
    return DYNAMIC
