"""joblib's process backends (loky, multiprocessing) under corral's thread limits.

joblib starts its workers itself; corral cannot give them CPU sets, but it gives them the thread-limit
environment a share would get (docs/native.md, "Inner thread counts"), through joblib's private hook
ParallelBackendBase._prepare_worker_env (see _compat's notes). corral.patch() applies the targets once the
program imports joblib (_patch's import hook); nothing here imports joblib until patch_targets() is called.
"""

from __future__ import annotations

import math

from . import _pool_settings, _thread_limits

JOBLIB_MODULE = "joblib._parallel_backends"  # the module patch_targets() reaches


def patch_targets() -> list[tuple[object, str, object]]:
    """(owner, attribute, replacement) that make joblib's process backends (loky, multiprocessing)
    give their workers corral's limits: budget // n_jobs threads (joblib uses cpu_count() //
    n_jobs, which ignores CORRAL_CPUS), PYTHON_CPU_COUNT, and CORRAL_CPUS so that corral inside a
    loky worker sees its share. A variable the user set follows corral's rule (the lower of it and
    the share; see _thread_limits.decide()), and an explicit inner_max_num_threads (parallel_config) still wins.
    The process-wide factor and force settings (corral.patch(factor=, force=), the runner's -f /
    --force) widen the share and override variables the user set, as they do for corral's own
    process pools. Empty when joblib is not installed. (How many workers n_jobs=-1 starts is
    LOKY_MAX_CPU_COUNT's business: see _thread_limits.loky_cpu_count_changes.)

    loky starts its workers itself (fork_exec with this environment), so they get no CPU set:
    loky reuses one executor across calls with different n_jobs, which a static partition does
    not fit.
    """
    try:
        # Here, not at the top: importing joblib imports numpy, which a program that never uses joblib must not
        # pay for (nor find numpy's OpenBLAS loaded before its thread-limit variables are set).
        import joblib._parallel_backends as backends
    except ImportError:
        return []
    base = backends.ParallelBackendBase
    original = base.__dict__.get("_prepare_worker_env")
    if original is None:
        return []

    def _prepare_worker_env(self, n_jobs):
        env = original(self, n_jobs)
        settings = _pool_settings.get()  # the runner's -f / --force (corral.patch(factor=, force=))
        budget = _pool_settings.budget_cpus()
        share = max(1, budget // max(1, int(n_jobs)))
        share = min(budget, math.ceil(share * settings["factor"]))  # widened as Pool's sets are
        explicit = getattr(self, "inner_max_num_threads", None)
        threads = int(explicit) if explicit else share
        corral_env = _thread_limits.environment_for(threads, cpus=share, force=settings["force"])
        if explicit:
            for var in _thread_limits.THREAD_LIMIT_VARS:
                if var in env:
                    corral_env.pop(var, None)
        env.update(corral_env)
        return env

    _prepare_worker_env.__wrapped__ = original
    return [(base, "_prepare_worker_env", _prepare_worker_env)]
