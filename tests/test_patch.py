"""corral.patch(): the stdlib thread and process pools become corral's, names imported earlier
included, and leaving the patch puts everything back exactly."""

import concurrent.futures
import concurrent.futures.process
import concurrent.futures.thread
import json
import multiprocessing.context
import multiprocessing.dummy
import multiprocessing.pool
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor as EarlyProcessExecutor
from concurrent.futures import ThreadPoolExecutor as EarlyExecutor  # imported before any patch
from multiprocessing.pool import Pool as EarlyProcessPool
from multiprocessing.pool import ThreadPool as EarlyPool

import pytest

import corral


def _state():
    return (
        multiprocessing.pool.ThreadPool,
        concurrent.futures.thread.ThreadPoolExecutor,
        concurrent.futures.ThreadPoolExecutor,
        "ThreadPoolExecutor" in vars(concurrent.futures),
        vars(multiprocessing.pool.ThreadPool)["__init__"],
        vars(concurrent.futures.thread.ThreadPoolExecutor)["__init__"],
    )


def test_module_attributes_are_replaced_and_restored():
    before = _state()
    with corral.patch():
        assert multiprocessing.pool.ThreadPool is corral.ThreadPool
        assert concurrent.futures.ThreadPoolExecutor is corral.ThreadPoolExecutor
        assert concurrent.futures.thread.ThreadPoolExecutor is corral.ThreadPoolExecutor
        with multiprocessing.dummy.Pool(2) as pool:
            assert type(pool) is corral.ThreadPool
    assert _state() == before


def test_names_imported_before_patching_build_corrals_pools():
    with corral.patch():
        with EarlyExecutor(max_workers=3, thread_name_prefix="early") as ex:
            assert type(ex) is corral.ThreadPoolExecutor
            assert ex._max_workers == 3  # __init__ ran once, with the caller's arguments
            assert ex.submit(pow, 2, 5).result(timeout=10) == 32
        with EarlyPool(2) as pool:
            assert type(pool) is corral.ThreadPool
            assert pool.map(abs, [-1, -2]) == [1, 2]
    with EarlyExecutor(2) as ex:
        assert type(ex) is EarlyExecutor
    pool = EarlyPool(1)
    assert type(pool) is EarlyPool
    pool.terminate()


# Subclasses a library defines at its import, before the program enters the patch (dask's threaded
# scheduler defines one): under the runner they subclass corral's classes; under patch() too.
class LibraryExecutor(EarlyExecutor):
    def __init__(self, workers):
        self.made_by_library = True  # before the base class's set-up, as subclasses often do
        super().__init__(max_workers=workers)

    def submit(self, fn, /, *args, **kwargs):  # the subclass's own override keeps coming first
        return super().submit(fn, *args, **kwargs)


class LibraryProcessPool(EarlyProcessPool):
    def label(self):
        return "library"


class LibraryProcessExecutor(EarlyProcessExecutor):
    pass


def _affinity(_=None):
    return sorted(os.sched_getaffinity(0))


def test_subclasses_defined_before_the_patch_are_covered():
    cpus = sorted(os.sched_getaffinity(0))
    with corral.patch():
        with LibraryExecutor(2) as ex:
            assert isinstance(ex, corral.ThreadPoolExecutor) and isinstance(ex, LibraryExecutor)
            assert type(ex).__name__ == "LibraryExecutor" and ex.made_by_library
            assert ex.submit(abs, -4).result(timeout=10) == 4
        pool = LibraryProcessPool(len(cpus), context=multiprocessing.get_context("fork"))
        try:
            assert isinstance(pool, corral.Pool) and pool.label() == "library"
            # every worker pinned to its own CPU: corral's shares, observed from the workers
            seen = pool.map_async(_affinity, range(4 * len(cpus)), chunksize=1).get(60)
            assert {tuple(a) for a in seen} <= {(c,) for c in cpus}
        finally:
            pool.terminate()
            pool.join()
        with LibraryProcessExecutor(1, mp_context=multiprocessing.get_context("fork")) as ex:
            assert isinstance(ex, corral.ProcessPoolExecutor)
            assert ex.submit(_affinity).result(timeout=60) == cpus  # one worker: every CPU
    with LibraryExecutor(1) as ex:  # after the patch: the stdlib's again
        assert type(ex) is LibraryExecutor and not isinstance(ex, corral.ThreadPoolExecutor)


def test_stdlib_subclasses_are_not_combined_with_other_replacements():
    with corral.patch():
        pool = multiprocessing.pool.ThreadPool(1)  # a stdlib Pool subclass: corral's ThreadPool, not a corral.Pool
        try:
            assert isinstance(pool, corral.ThreadPool) and not isinstance(pool, corral.Pool)
        finally:
            pool.terminate()


def test_nested_patches_restore_only_at_the_outermost():
    before = _state()
    with corral.patch():
        with corral.patch():
            pass
        assert multiprocessing.pool.ThreadPool is corral.ThreadPool
    assert _state() == before


def test_an_exit_without_its_entry_is_an_error_and_later_patches_still_patch():
    before = _state()
    stray = corral.patch()
    with pytest.raises(RuntimeError, match="without a matching __enter__"):
        stray.__exit__(None, None, None)
    with corral.patch():
        assert multiprocessing.pool.ThreadPool is corral.ThreadPool
    assert _state() == before
    entered = corral.patch()
    with entered:
        pass
    with pytest.raises(RuntimeError, match="without a matching __enter__"):
        entered.__exit__(None, None, None)  # exited once already
    assert _state() == before


def test_restores_after_an_exception():
    before = _state()
    with pytest.raises(ZeroDivisionError):
        with corral.patch():
            1 / 0
    assert _state() == before


def test_as_a_decorator():
    @corral.patch()
    def build():
        return concurrent.futures.ThreadPoolExecutor(1)

    ex = build()
    assert type(ex) is corral.ThreadPoolExecutor
    ex.shutdown()
    assert concurrent.futures.ThreadPoolExecutor is EarlyExecutor


def test_settings_follow_the_patch():
    from corral import _pool_settings

    before = _pool_settings.get()
    with corral.patch(native=False, mode="static", factor=2, force=True):
        assert _pool_settings.get() == {"native": False, "mode": "static", "factor": 2.0, "force": True}
    assert _pool_settings.get() == before


def test_bad_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="mode"):
        corral.patch(mode="turbo")


@pytest.mark.parametrize("factor, error", [(0.5, ValueError), (float("nan"), ValueError),
                                           (float("inf"), ValueError), ("two", TypeError),
                                           ("2", TypeError), (True, TypeError), (1j, TypeError)])
def test_bad_factor_is_a_clear_error(factor, error):
    before = _process_state()
    with pytest.raises(error, match="corral.patch: factor"):
        corral.patch(factor=factor)
    assert _process_state() == before


def test_a_decimal_factor_is_a_number():
    import decimal

    import corral._pool_settings

    with corral.patch(factor=decimal.Decimal("1.5")):
        assert corral._pool_settings.get()["factor"] == 1.5


def test_blocking_exited_twice_says_so():
    scope = corral.blocking()
    with scope:
        pass
    with pytest.raises(RuntimeError, match="exited twice"):
        scope.__exit__(None, None, None)


# --- process pools ------------------------------------------------------------------------------

def _process_state():
    return (
        multiprocessing.pool.Pool,
        multiprocessing.context.BaseContext.__dict__["Pool"],
        concurrent.futures.process.ProcessPoolExecutor,
        vars(concurrent.futures).get("ProcessPoolExecutor"),
        vars(multiprocessing.pool.Pool)["__init__"],
        vars(multiprocessing.pool.Pool).get("__init_subclass__"),
        vars(concurrent.futures.process.ProcessPoolExecutor)["__init__"],
        _joblib_prepare_env(),
        list(sys.meta_path),
    )


def _joblib_prepare_env():
    backends = sys.modules.get("joblib._parallel_backends")
    return None if backends is None else vars(backends.ParallelBackendBase)["_prepare_worker_env"]


def test_process_pools_are_replaced_and_restored():
    concurrent.futures.ProcessPoolExecutor  # noqa: B018  (resolve the lazy attribute as a program would)
    before = _process_state()
    with corral.patch():
        # The name stays the stdlib's class (ThreadPool's base); constructing it builds corral's.
        assert multiprocessing.pool.Pool is before[0]
        assert issubclass(multiprocessing.pool.ThreadPool, multiprocessing.pool.Pool)
        assert concurrent.futures.ProcessPoolExecutor is corral.ProcessPoolExecutor
        assert concurrent.futures.process.ProcessPoolExecutor is corral.ProcessPoolExecutor
        assert any("ProcessPoolExecutor" in line for line in sys.modules["corral._patch"].describe())
    assert _process_state() == before


def test_pool_subclasses_defined_under_the_patch_work_as_under_plain_python():
    # The name multiprocessing.pool.Pool stays the stdlib's class; a class defined on it under the
    # patch is rebased onto corral's Pool. Found by a breaking pass: each of these failed once
    # (corral's __init__ skipped, then AttributeError '_broken').
    import multiprocessing.pool as mpp

    fork = multiprocessing.get_context("fork")
    made = []
    with corral.patch():
        class ByName(mpp.Pool):  # calls its base's __init__ by name (older code does)
            def __init__(self, processes):
                mpp.Pool.__init__(self, processes, context=fork)
                self.label = "by name"

        class Counting:
            def __init_subclass__(cls, **kwargs):  # wraps __init__ as found, before the rebase
                original = cls.__init__

                def __init__(self, *args, **kw):
                    made.append(cls.__name__)
                    original(self, *args, **kw)

                cls.__init__ = __init__
                super().__init_subclass__(**kwargs)

        class Counted(Counting, mpp.Pool):
            pass

        class Both(mpp.ThreadPool, mpp.Pool):  # a thread pool, as under plain python
            pass

        # On a rebased subclass and ThreadPool, in either order: a thread pool with ByName's methods, as
        # under plain python (corral's Pool, which C3 puts before ThreadPool in the first, hands it on).
        class RebasedFirst(ByName, mpp.ThreadPool):
            def __init__(self, processes):
                mpp.ThreadPool.__init__(self, processes)
                self.label = "by name"

        class ThreadPoolFirst(mpp.ThreadPool, Counted):
            pass

        children = multiprocessing.active_children()
        pools = [ByName(1), Counted(1, context=fork), Both(2), RebasedFirst(2), ThreadPoolFirst(2)]
    try:
        assert [type(p) for p in pools] == [ByName, Counted, Both, RebasedFirst, ThreadPoolFirst]
        assert isinstance(pools[0], corral.Pool) and isinstance(pools[1], corral.Pool)
        assert all(not isinstance(p, corral.Pool) or type(p).__mro__.index(corral.Pool) >
                   type(p).__mro__.index(corral.ThreadPool) or p is pools[3] for p in pools[2:])
        assert all(isinstance(p, corral.ThreadPool) for p in pools[2:])
        assert [p.map(abs, [-1, -2]) for p in pools] == [[1, 2]] * 5
        assert pools[0].label == "by name" and made == ["Counted", "ThreadPoolFirst"]
        assert pools[0].apply(os.getpid) != os.getpid() and pools[3].label == "by name"
        assert [p.apply(os.getpid) for p in pools[2:]] == [os.getpid()] * 3
        assert [len(p._pool) for p in pools[2:]] == [2] * 3  # thread workers, no process started for them
        assert len(multiprocessing.active_children()) == len(children) + 2
    finally:
        for pool in pools:
            pool.terminate()
            pool.join()


class LibraryPoolOnBoth(LibraryProcessPool, multiprocessing.pool.ThreadPool):
    """A thread pool (ThreadPool's set-up, LibraryProcessPool's methods), defined before any patch."""


def test_a_class_on_a_process_pool_subclass_and_thread_pool_stays_a_thread_pool():
    with corral.patch(), LibraryPoolOnBoth(2) as pool:
        assert isinstance(pool, corral.ThreadPool) and pool.label() == "library"
        assert pool.apply(os.getpid) == os.getpid() and len(pool._pool) == 2


def test_a_class_on_a_rebased_subclass_and_thread_pool_takes_the_thread_pools_arguments():
    # corral's Pool hands the caller's arguments on as given: the thread pool's errors, word for word
    calls = [((2,), {"context": None}), ((2, None, (), None), {}), ((2,), {"bogus": 1}), ((), {"factor": 2})]

    def errors():
        class Mine(multiprocessing.pool.Pool):
            pass

        class Both(Mine, multiprocessing.pool.ThreadPool):
            def __del__(self):  # a pool whose __init__ raised: the stdlib's __del__ would complain
                pass

        seen = []
        for args, kwargs in calls:
            with pytest.raises(TypeError) as info:
                Both(*args, **kwargs)
            seen.append(str(info.value))
        return seen

    plain = errors()
    with corral.patch():
        patched = errors()
    assert patched == plain and all(e.startswith("ThreadPool.__init__()") for e in plain), (plain, patched)


def test_corrals_pool_classes_pickle_by_the_name_they_carry():
    import inspect
    import pickle

    classes = [corral.ThreadPool, corral.ThreadPoolExecutor, corral.Pool, corral.ProcessPoolExecutor]
    assert [f"{c.__module__}.{c.__qualname__}" for c in classes] == [  # where they are defined
        "corral._thread_pool.ThreadPool", "corral._executor.ThreadPoolExecutor", "corral._process_pool.Pool",
        "corral._process_executor.ProcessPoolExecutor"]
    assert [pickle.loads(pickle.dumps(c)) for c in classes] == classes
    with corral.patch():  # named as the stdlib's, which the patch makes theirs (Pool's name stays the stdlib's)
        patched = [corral.ThreadPool, corral.ThreadPoolExecutor, corral.ProcessPoolExecutor]
        assert [f"{c.__module__}.{c.__qualname__}" for c in patched] == [
            "multiprocessing.pool.ThreadPool", "concurrent.futures.thread.ThreadPoolExecutor",
            "concurrent.futures.process.ProcessPoolExecutor"]
        assert [pickle.loads(pickle.dumps(c)) for c in patched] == patched
        assert repr(corral.Pool) == "<class 'multiprocessing.pool.Pool'>"
    assert [c.__module__ for c in classes] == [
        "corral._thread_pool", "corral._executor", "corral._process_pool", "corral._process_executor"]
    assert all(inspect.getsourcefile(c) == sys.modules[c.__module__].__file__ for c in classes)


def test_process_pools_built_under_the_patch_are_corrals(monkeypatch):
    for var in ("OMP_NUM_THREADS", "CORRAL_CPUS", "CORRAL_MANAGED_ENV"):
        monkeypatch.delenv(var, raising=False)
    cpus = len(os.sched_getaffinity(0))
    fork = multiprocessing.get_context("fork")
    with corral.patch(factor=2):
        pools = [multiprocessing.Pool(1), fork.Pool(1), EarlyProcessPool(1, context=fork)]
        executors = [concurrent.futures.ProcessPoolExecutor(1, mp_context=fork),
                     EarlyProcessExecutor(1, mp_context=fork)]
    try:
        for pool in pools:
            assert type(pool) is corral.Pool
        for executor in executors:
            assert type(executor) is corral.ProcessPoolExecutor
            assert executor._max_workers == 1  # __init__ ran once, with the caller's arguments
        assert pools[0].apply(os.getpid) != os.getpid()  # they work after the patch ended
        assert executors[1].submit(abs, -3).result(timeout=60) == 3
    finally:
        for pool in pools:
            pool.terminate()
            pool.join()
        for executor in executors:
            executor.shutdown()
    # One worker has every CPU whatever the factor: the patch's factor shows in a pool of `cpus`.
    with corral.patch(factor=2):
        widened = corral.Pool(cpus, context=fork)
        explicit = corral.Pool(cpus, context=fork, factor=1)
    try:
        assert all(len(share.cpus) == min(cpus, 2) for share in widened.shares)
        assert all(len(share.cpus) == 1 for share in explicit.shares)  # an explicit factor wins
    finally:
        for pool in (widened, explicit):
            pool.terminate()
            pool.join()
    plain = EarlyProcessPool(1)
    assert type(plain) is EarlyProcessPool  # after the patch, the stdlib's again
    plain.terminate()
    plain.join()


def test_force_follows_the_patch(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("CORRAL_MANAGED_ENV", raising=False)
    fork = multiprocessing.get_context("fork")
    with corral.patch():
        kept = corral.Pool(1, context=fork)
    with corral.patch(force=True):
        forced = corral.Pool(1, context=fork)
    try:
        assert "OMP_NUM_THREADS" not in kept.shares[0].env  # the user's 1, below the share, is passed on
        assert forced.shares[0].env["OMP_NUM_THREADS"] == str(forced.shares[0].threads)
    finally:
        for pool in (kept, forced):
            pool.terminate()
            pool.join()


def test_joblib_is_patched_only_once_imported():
    """Patching must not import joblib (and numpy with it) into a program that does not use it."""
    code = textwrap.dedent("""\
        import sys
        import corral
        with corral.patch(factor=2):
            assert "joblib" not in sys.modules and "numpy" not in sys.modules
            try:
                import joblib._parallel_backends as backends
            except ImportError:
                print("no joblib")
                raise SystemExit(0)
            prepare = vars(backends.ParallelBackendBase)["_prepare_worker_env"]
            print(hasattr(prepare, "__wrapped__"), backends.LokyBackend()._prepare_worker_env(1)["CORRAL_CPUS"])
        print(hasattr(vars(backends.ParallelBackendBase)["_prepare_worker_env"], "__wrapped__"))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["CORRAL_CPUS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    if out.stdout.strip() == "no joblib":
        pytest.skip("joblib is not installed")
    # Budget 1, n_jobs 1, factor 2: the share is widened to at most the budget.
    assert out.stdout.split() == ["True", "1", "False"]


def test_joblib_cpu_count_follows_the_budget_while_patched():
    """Under corral.patch() with a budget of 1: joblib.cpu_count() is 1 and Parallel(n_jobs=-1)
    runs on one process; after the patch, LOKY_MAX_CPU_COUNT is gone and joblib is as before."""
    code = textwrap.dedent("""\
        import json, os, time
        import corral
        import joblib
        from joblib import Parallel, delayed

        def who(_):
            time.sleep(0.3)
            return os.getpid()

        def run():
            pids = Parallel(n_jobs=-1)(delayed(who)(i) for i in range(4 * joblib.cpu_count()))
            return [joblib.cpu_count(), len(set(pids)), os.environ.get("LOKY_MAX_CPU_COUNT")]

        with corral.patch():
            inside = run()
        print(json.dumps([inside, run()]))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "LOKY_"))}
    env["CORRAL_CPUS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    cpus = len(os.sched_getaffinity(0))
    assert json.loads(out.stdout) == [[1, 1, "1"], [cpus, cpus, None]]


# concurrent.futures not imported when the patch is entered: patched at its import, and put back when the patch
# ends (a fresh interpreter: this module imported it at its top).
LATE_FUTURES = """\
import corral, multiprocessing.pool, sys
with corral.patch():
    assert "concurrent.futures" not in sys.modules
    {inside}
    import concurrent.futures as f
    print(isinstance(f.ThreadPoolExecutor(1), corral.ThreadPoolExecutor),
          isinstance(f.ProcessPoolExecutor(1), corral.ProcessPoolExecutor))
import concurrent.futures.process as p, concurrent.futures.thread as t
print(f.ProcessPoolExecutor is p.ProcessPoolExecutor, f.ThreadPoolExecutor is t.ThreadPoolExecutor,
      hasattr(vars(p.ProcessPoolExecutor)["__init__"], "__wrapped__"),  # the patch's __init__ (functools.wraps)
      hasattr(vars(t.ThreadPoolExecutor)["__init__"], "__wrapped__"))
"""


@pytest.mark.parametrize("inside", ["pass", "from corral import ThreadPoolExecutor",
                                    "from corral import ProcessPoolExecutor"])
def test_concurrent_futures_imported_inside_the_patch_is_patched_and_restored(inside):
    # corral's executors imported first import concurrent.futures themselves: its patch waits for them
    proc = subprocess.run([sys.executable, "-c", LATE_FUTURES.format(inside=inside)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True", "True", "True", "False", "False"], proc.stdout
