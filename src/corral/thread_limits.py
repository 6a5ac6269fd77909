"""Thread limits in the environment: what a process that may use `n` CPUs should see.

Native libraries read these variables once, when they load; a child process must have them
before its libraries load (design.md invariant 5). Shared by corral's process pools (one
share per worker) and by the thread pools' static mode.

Rules:
- A variable the user set wins, unless `force` (the runner's --force).
- CORRAL_CPUS is corral's own: always set, so that corral inside the child sees its share
  as its budget (nesting composes).
- CORRAL_MANAGED_ENV lists the variables corral set, so that a corral nested in the child
  knows they are not the user's and may narrow them again.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterator, Mapping, MutableMapping

# Read by OpenMP runtimes, OpenBLAS, MKL, BLIS, Apple Accelerate, numexpr, numba, and
# CPython >= 3.13 (os.cpu_count / os.process_cpu_count), in that order.
THREAD_LIMIT_VARS: tuple[str, ...] = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "PYTHON_CPU_COUNT",
)
BUDGET_VAR = "CORRAL_CPUS"
MANAGED_VAR = "CORRAL_MANAGED_ENV"

# Variables that also decide a BLAS/OpenMP library's thread count (OpenBLAS falls back to
# GOTO_NUM_THREADS, then OMP_NUM_THREADS): when the user set one of them, corral leaves the
# loaded libraries' run-time settings alone too.
NATIVE_VARS: tuple[str, ...] = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
)

# os.environ is process-wide: changes around a process start are made under this lock.
environ_lock = threading.RLock()


def managed_vars(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The variables that corral (in this process or an ancestor) set, per CORRAL_MANAGED_ENV."""
    environ = os.environ if environ is None else environ
    return frozenset(v for v in environ.get(MANAGED_VAR, "").split(",") if v)


def user_set_vars(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The thread-limit variables present in `environ` that corral did not set."""
    environ = os.environ if environ is None else environ
    managed = managed_vars(environ)
    return frozenset(v for v in (*THREAD_LIMIT_VARS, "GOTO_NUM_THREADS") if v in environ and v not in managed)


def environment_for(threads: int, *, cpus: int | None = None, force: bool = False,
                    environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables to set in a process allowed `threads` native threads and `cpus` CPUs.

    threads: the value of every *_NUM_THREADS variable and PYTHON_CPU_COUNT (at least 1).
    cpus: the value of CORRAL_CPUS, the child's budget (default: threads).
    Variables the user set in `environ` (default os.environ) are left out unless force.
    The result includes CORRAL_MANAGED_ENV naming what corral set.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"thread limit must be a whole number >= 1, not {threads!r}")
    cpus = threads if cpus is None else cpus
    if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
        raise ValueError(f"CPU count must be a whole number >= 1, not {cpus!r}")
    keep = frozenset() if force else user_set_vars(environ)
    changes = {var: str(threads) for var in THREAD_LIMIT_VARS if var not in keep}
    changes[BUDGET_VAR] = str(cpus)
    environ = os.environ if environ is None else environ
    managed = (managed_vars(environ) - keep) | set(changes)
    changes[MANAGED_VAR] = ",".join(sorted(managed))
    return changes


def native_limits_allowed(*, force: bool = False, environ: Mapping[str, str] | None = None) -> bool:
    """Whether corral may change the thread counts of already loaded BLAS/OpenMP libraries:
    not when the user chose them through the environment (unless force)."""
    return force or not (user_set_vars(environ) & set(NATIVE_VARS))


def apply(changes: Mapping[str, str], environ: MutableMapping[str, str] | None = None) -> dict[str, str | None]:
    """Sets `changes` in `environ` (default os.environ); returns the previous values (None: was unset)."""
    environ = os.environ if environ is None else environ
    previous = {var: environ.get(var) for var in changes}
    environ.update(changes)
    return previous


def restore(previous: Mapping[str, str | None], environ: MutableMapping[str, str] | None = None) -> None:
    """Puts back what apply() returned."""
    environ = os.environ if environ is None else environ
    for var, value in previous.items():
        if value is None:
            environ.pop(var, None)
        else:
            environ[var] = value


@contextlib.contextmanager
def applied(changes: Mapping[str, str]) -> Iterator[None]:
    """os.environ carries `changes` inside the block (for starting a child process), under
    environ_lock so that two starts do not mix their values."""
    with environ_lock:
        previous = apply(changes)
        try:
            yield
        finally:
            restore(previous)


def joblib_patch_targets() -> list[tuple[object, str, object]]:
    """(owner, attribute, replacement) that make joblib's process backends (loky, multiprocessing)
    give their workers corral's limits: budget // n_jobs threads (joblib uses cpu_count() //
    n_jobs, which ignores CORRAL_CPUS), PYTHON_CPU_COUNT, and CORRAL_CPUS so that corral inside a
    loky worker sees its share. joblib already keeps variables the user set, and an explicit
    inner_max_num_threads (parallel_config) still wins. The process-wide factor and force settings
    (corral.patch(factor=, force=), the runner's -f / --force) widen the share and override
    variables the user set, as they do for corral's own process pools. Empty when joblib is not
    installed.

    loky starts its workers itself (fork_exec with this environment), so they get no CPU set:
    loky reuses one executor across calls with different n_jobs, which a static partition does
    not fit.
    """
    try:
        import joblib._parallel_backends as backends
    except ImportError:
        return []
    base = backends.ParallelBackendBase
    original = base.__dict__.get("_prepare_worker_env")
    if original is None:
        return []

    def _prepare_worker_env(self, n_jobs):
        env = original(self, n_jobs)
        from . import _pool_settings

        settings = _pool_settings.get()  # the runner's -f / --force (corral.patch(factor=, force=))
        budget = _pool_settings.budget_cpus()
        share = max(1, budget // max(1, int(n_jobs)))
        share = min(budget, math.ceil(share * settings["factor"]))  # widened as Pool's sets are
        explicit = getattr(self, "inner_max_num_threads", None)
        corral_env = environment_for(int(explicit) if explicit else share, cpus=share, force=settings["force"])
        if explicit:
            for var in THREAD_LIMIT_VARS:
                if var in env:
                    corral_env.pop(var, None)
        env.update(corral_env)
        return env

    _prepare_worker_env.__wrapped__ = original
    return [(base, "_prepare_worker_env", _prepare_worker_env)]
