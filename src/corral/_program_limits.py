"""The budget for the program's own BLAS/OpenMP calls (made outside any pool).

Libraries size their thread pools from the CPUs they see (affinity), not from a cgroup quota or
CORRAL_CPUS. When the budget is below that, the runner exports the libraries' thread-limit
variables = budget before the program loads them, and lowers the process-wide setting of those
already loaded. A variable the user set is kept or lowered by the rule in docs/native.md, "Inner
thread counts".
"""

from __future__ import annotations

import os

from ._thread_limits import MANAGED_VAR, THREAD_LIMIT_VARS, managed_vars

CORE = "corral._core"
DEFERRED_IMPORTS = (CORE,)  # tests/test_imports.py counts it in the module graph

# Read when the library loads. Not NUMBA_NUM_THREADS (numba then refuses set_num_threads above
# it: a program could fail), PYTHON_CPU_COUNT (os.cpu_count() is the program's to read) nor
# LOKY_MAX_CPU_COUNT (corral.patch() sets that one for joblib).
LIBRARY_VARS: tuple[str, ...] = tuple(
    var for var in THREAD_LIMIT_VARS if var not in ("NUMBA_NUM_THREADS", "PYTHON_CPU_COUNT", "LOKY_MAX_CPU_COUNT"))


class Decision:
    """One thread-limit variable's decision: var; value, what the environment has now (None: unset); new,
    what to set (None: kept); why. A plain class: this module runs at every start of the runner and of
    each child Python, where a namedtuple would import collections and a dataclass inspect."""

    __slots__ = ("var", "value", "new", "why")

    def __init__(self, var: str, value: str | None, new: str | None, why: str):
        self.var, self.value, self.new, self.why = var, value, new, why

    def __repr__(self) -> str:
        return f"Decision({self.var!r}, {self.value!r}, {self.new!r}, {self.why!r})"


def decide(budget: int, visible: int, environ=None) -> list[Decision]:
    """One decision per variable; empty when the budget is not below the `visible` CPUs
    (the libraries' own default then fits the budget: nothing to change)."""
    environ = os.environ if environ is None else environ
    if budget >= visible:
        return []
    ours = managed_vars(environ)  # set by a corral above us: ours to narrow
    decisions = []
    for var in LIBRARY_VARS:
        value = environ.get(var)
        if value is None or var in ours:
            why = f"set: the budget, {budget}, is below the {visible} CPUs the libraries see"
            decisions.append(Decision(var, value, str(budget), why))
            continue
        limit = _whole_number(value)
        if limit is None:
            decisions.append(Decision(var, value, None, "kept: yours, not a plain number"))
        elif limit <= budget:
            decisions.append(Decision(var, value, None, f"kept: yours, not above the budget {budget}"))
        else:
            decisions.append(Decision(var, value, str(budget), f"lowered: yours is above the budget {budget}"))
    return decisions


def apply(budget: int, decisions: list[Decision], environ=None) -> int | None:
    """Puts the decisions into the environment (naming them in CORRAL_MANAGED_ENV, so that corral's
    process pools may narrow them for their workers) and lowers the libraries already loaded.
    Returns the limit now in force for the program's own calls (None: nothing decided)."""
    if not decisions:
        return None
    environ = os.environ if environ is None else environ
    changed = {d.var: d.new for d in decisions if d.new is not None}
    altered = any(d.new != d.value for d in decisions if d.new is not None)
    environ.update(changed)
    if changed:
        environ[MANAGED_VAR] = ",".join(sorted(managed_vars(environ) | set(changed)))
    kept = (_whole_number(d.value) for d in decisions if d.new is None)
    limit = min([budget, *(n for n in kept if n)])  # never raise a lower limit the user chose
    # A library loaded already read the variables as they were: with none altered and each a number within
    # the limit (a child of the runner, which set them), none can be above it, and the C extension that
    # scans them need not load (docs/children.md, "What a child costs").
    if altered or not all((_whole_number(environ.get(var)) or limit + 1) <= limit for var in LIBRARY_VARS):
        _lower_loaded_libraries(limit)
    return limit


def _lower_loaded_libraries(limit: int) -> None:
    """Libraries loaded before the program (sitecustomize, .pth files) read their variables already."""
    import importlib

    _core = importlib.import_module(CORE)  # not at import: see apply()
    pools = _core.native_pools()
    if any(p["num_threads"] > limit and p["scope"] == "process" for p in pools):
        _core.set_native_process_limit(limit)
    if any(p["num_threads"] > limit and p["scope"] == "calling_thread" for p in pools):
        _core.set_native_thread_limit(limit)  # the main thread, where the program runs


# OpenBLAS's idle threads spin for 2**OPENBLAS_THREAD_TIMEOUT cycles (the default 28: ~0.1 s) after
# each call before they sleep; a spinner holds a core the budget gave to another task. 22 (~1.5 ms
# at 3 GHz) still spans the gaps between the calls of a loop of BLAS calls, which then never wake a
# sleeping thread, and ends the spinning after a pool's multi-threaded call 60x sooner
# (docs/native.md, "Spinning"). 4, the minimum, made every call wake them: a program without pools
# ran up to 80% slower.
SPIN_VAR = "OPENBLAS_THREAD_TIMEOUT"
SPIN_EXPONENT = "22"


def limit_spinning(environ=None) -> str | None:
    """Sets OpenBLAS's spin time for the libraries the program will load, unless the user set it.

    In the C environment only (os.putenv): os.environ, what the program reads, stays as under plain
    python; child processes inherit it as they inherit the rest of the environment. Returns the value
    set, or None when the user's is kept."""
    environ = os.environ if environ is None else environ
    if SPIN_VAR in environ:
        return None
    os.putenv(SPIN_VAR, SPIN_EXPONENT)
    return SPIN_EXPONENT


def _whole_number(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(value) if value.isascii() and value.isdigit() and int(value) >= 1 else None
