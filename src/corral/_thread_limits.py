"""Thread limits in the environment: what a process that may use `n` CPUs should see.

Native libraries read these variables once, when they load; a child process must have them
before its libraries load (docs/architecture.md invariant 5). Shared by corral's process pools (one
share per worker), joblib's workers, the patch (LOKY_MAX_CPU_COUNT) and the thread pools' cap.

- The rule for a variable the user set (an upper bound; the lower wins; `force`) is docs/native.md,
  "Inner thread counts"; decide() implements it.
- CORRAL_CPUS is corral's own: always set, so that corral inside the child sees its share
  as its budget (nesting composes).
- CORRAL_MANAGED_ENV lists the variables corral set, so that a corral nested in the child
  knows they are not the user's and may narrow them again.
"""

import _thread
import os

# collections.abc's own module, which os loads at every start (collections.abc imports collections, and
# `from __future__ import annotations` the __future__ module: each some 0.3 ms of a child Python's start)
from _collections_abc import Mapping, MutableMapping

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
    "LOKY_MAX_CPU_COUNT",  # joblib.cpu_count() and n_jobs=-1 (loky reads it at each call)
)
BUDGET_VAR = "CORRAL_CPUS"
MAX_BUDGET = 65536  # the largest value BUDGET_VAR may hold (C++ max_budget: cpu_set::max_cpu_id + 1)
CHILDREN_VAR = "CORRAL_CHILDREN"  # child Pythons join the budget (_children.py)
MANAGED_VAR = "CORRAL_MANAGED_ENV"

# Variables that also decide a BLAS/OpenMP library's thread count (OpenBLAS falls back to
# GOTO_NUM_THREADS, then OMP_NUM_THREADS): a whole number the user set in one of them also
# bounds the run-time thread counts corral gives libraries already loaded (native_limit).
NATIVE_VARS: tuple[str, ...] = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
)

# os.environ is process-wide: changes around a process start are made under this lock.
environ_lock = _thread.RLock()  # threading.RLock, without importing threading (docs/architecture.md, "Start-up")


def managed_vars(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The variables that corral (in this process or an ancestor) set, per CORRAL_MANAGED_ENV."""
    environ = os.environ if environ is None else environ
    return frozenset(v for v in environ.get(MANAGED_VAR, "").split(",") if v)


def user_set_vars(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The thread-limit variables present in `environ` that corral did not set."""
    environ = os.environ if environ is None else environ
    managed = managed_vars(environ)
    return frozenset(v for v in (*THREAD_LIMIT_VARS, "GOTO_NUM_THREADS") if v in environ and v not in managed)


def user_limit(value: str | None) -> int | None:
    """A variable's value as a thread count: a whole number >= 1, else None (unset, or garbage
    such as "auto" or OpenMP's nested list "4,2", which corral passes on untouched)."""
    try:
        number = int(value.strip())  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        return None
    return number if number >= 1 else None


def decide(var: str, threads: int, *, force: bool = False,
           environ: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """What a child allowed `threads` threads gets for `var`: (decision, value).

    decision: "set" (the user did not set it: corral's `threads`), "kept" (the user's value, at
    or below `threads`, or not a whole number), "lowered" (the user's value was above `threads`),
    "forced" (force: `threads` over the user's lower or garbage value). value: what the child's
    environment gets (None for "kept": the user's own value stays).
    """
    environ = os.environ if environ is None else environ
    if var not in user_set_vars(environ):
        return "set", str(threads)
    if force:
        return "forced", str(threads)
    mine = user_limit(environ[var])
    if mine is not None and mine > threads:
        return "lowered", str(threads)
    return "kept", None


def environment_for(threads: int, *, cpus: int | None = None, force: bool = False,
                    environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables to set in a process allowed `threads` native threads and `cpus` CPUs.

    threads: the share for every *_NUM_THREADS variable, PYTHON_CPU_COUNT and LOKY_MAX_CPU_COUNT
    (at least 1); a value the user set in `environ` (default os.environ) is kept where it is
    lower or not a number, and lowered to `threads` where it is higher (see decide()).
    cpus: the value of CORRAL_CPUS, the child's budget (default: threads).
    The result includes CORRAL_MANAGED_ENV naming what corral set.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"thread limit must be a whole number >= 1, not {threads!r}")
    cpus = threads if cpus is None else cpus
    if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
        raise ValueError(f"CPU count must be a whole number >= 1, not {cpus!r}")
    environ = os.environ if environ is None else environ
    changes, kept = {}, set()
    for var in THREAD_LIMIT_VARS:
        decision, value = decide(var, threads, force=force, environ=environ)
        if value is None:
            kept.add(var)
        else:
            changes[var] = value
    changes[BUDGET_VAR] = str(cpus)
    managed = (managed_vars(environ) - kept) | set(changes)
    changes[MANAGED_VAR] = ",".join(sorted(managed))
    return changes


def native_limit(threads: int, *, force: bool = False, environ: Mapping[str, str] | None = None) -> int:
    """The thread count for BLAS/OpenMP libraries already loaded in a child allowed `threads`
    (or for the tasks of a process whose budget is `threads`): `threads` lowered by NATIVE_VARS the
    user set (docs/native.md, "Inner thread counts")."""
    if force:
        return threads
    environ = os.environ if environ is None else environ
    # user_set_vars(environ) & NATIVE_VARS, one lookup a variable (each thread pool's making calls this)
    managed = managed_vars(environ)
    users = (user_limit(environ.get(var)) for var in NATIVE_VARS if var not in managed)
    return min([threads, *(n for n in users if n is not None)])


def describe_user_limits(budget: int, *, force: bool = False,
                         environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per thread-limit variable the user set: what process-pool workers (whose shares
    are at most `budget`) get for it. Empty when the user set none."""
    environ = os.environ if environ is None else environ
    lines = []
    for var in sorted(user_set_vars(environ)):
        value, mine = environ[var], user_limit(environ[var])
        if force:
            what = "overridden by each worker's share (--force)"
        elif mine is None:
            what = "kept as you set it (not a whole number >= 1)"
        elif mine == 1:
            what = "kept (no share is below 1)"
        elif mine > budget:
            what = f"lowered to each worker's share (every share is at most the budget, {budget})"
        else:
            what = f"kept where a worker's share is >= {mine}, lowered to the share elsewhere"
        lines.append(f"{var}={value}: {what}")
    return lines


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


class applied:
    """with applied(changes): os.environ carries `changes` inside the block (for starting a child process),
    under environ_lock so that two starts do not mix their values. (A class, not a contextlib generator:
    this module is imported at every start of a child Python, and contextlib is not, otherwise.)"""

    def __init__(self, changes: Mapping[str, str]):
        self._changes = changes
        self._previous: dict | None = None

    def __enter__(self) -> None:
        environ_lock.acquire()
        try:
            self._previous = apply(self._changes)
        except BaseException:
            environ_lock.release()
            raise

    def __exit__(self, *exc_info) -> None:
        try:
            restore(self._previous)
        finally:
            environ_lock.release()


def loky_cpu_count_changes(budget: int, *, force: bool = False,
                           environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{"LOKY_MAX_CPU_COUNT": ...} that makes joblib.cpu_count(), loky.cpu_count() and
    Parallel(n_jobs=-1) follow a process's `budget` (loky reads the variable, its public knob,
    at each call and takes the minimum of it, the affinity and the cgroup quota), with
    CORRAL_MANAGED_ENV naming it as corral's; empty where a value the user set is kept (lower
    than the budget, or not a number; see decide())."""
    environ = os.environ if environ is None else environ
    decision, value = decide("LOKY_MAX_CPU_COUNT", budget, force=force, environ=environ)
    if value is None:
        return {}
    managed = managed_vars(environ) | {"LOKY_MAX_CPU_COUNT"}
    return {"LOKY_MAX_CPU_COUNT": value, MANAGED_VAR: ",".join(sorted(managed))}
