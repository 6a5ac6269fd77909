"""`python -m corral` with process pools: real scripts under the runner, observed from inside the
workers (affinity, thread-limit variables, corral's budget there), and the options that shape them:
-f/--oversubscription-factor, --force, -p/--cpus N|LIST, --mode static.

Process starts are slow, so each run checks several things at once. Every run has a timeout.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from _helpers import run_python

CPUS = sorted(os.sched_getaffinity(0))
TIMEOUT = 120
LIMIT_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "PYTHON_CPU_COUNT", "CORRAL_CPUS",
              "CORRAL_MANAGED_ENV", "GOTO_NUM_THREADS", "LOKY_MAX_CPU_COUNT")

try:
    import joblib  # noqa: F401

    HAVE_JOBLIB = True
except ImportError:
    HAVE_JOBLIB = False

# Each pool's initializer gets a barrier: every worker holds one task at once, so each answers once.
PROBE = textwrap.dedent("""\
    import json, multiprocessing, os, sys
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing.pool import Pool as ModulePool

    _barrier = None

    def init(barrier):
        global _barrier
        _barrier = barrier

    def probe(_=None):
        if _barrier is not None:
            _barrier.wait(60)
        import corral
        return {"pid": os.getpid(), "affinity": sorted(os.sched_getaffinity(0)), "budget": corral.budget().cpus,
                "env": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                                       "CORRAL_CPUS")}}

    def whose(pool):  # corral's classes carry the stdlib's names: ask corral
        import corral
        ours = isinstance(pool, (corral.Pool, corral.ProcessPoolExecutor))
        return ("corral." if ours else "") + type(pool).__module__

    if __name__ == "__main__":
        report = {"joblib_imported_at_start": "joblib" in sys.modules}
        with multiprocessing.Pool(2, initializer=init, initargs=(multiprocessing.Barrier(2),)) as pool:
            report["multiprocessing.Pool"] = [whose(pool), pool.map(probe, range(2), chunksize=1)]
        with ModulePool(2, initializer=init, initargs=(multiprocessing.Barrier(2),)) as pool:
            report["multiprocessing.pool.Pool"] = [whose(pool), pool.map(probe, range(2), chunksize=1)]
        with ProcessPoolExecutor(2, initializer=init, initargs=(multiprocessing.Barrier(2),)) as ex:
            report["ProcessPoolExecutor"] = [whose(ex), list(ex.map(probe, range(2)))]
        try:
            from joblib import Parallel, delayed
        except ImportError:
            pass
        else:
            report["joblib"] = Parallel(n_jobs=2, backend="loky")(delayed(probe)() for _ in range(4))
        print(json.dumps(report))
""")

POOLS = ("multiprocessing.Pool", "multiprocessing.pool.Pool", "ProcessPoolExecutor")
needs_two_cpus = pytest.mark.skipif(len(CPUS) < 2, reason="disjoint worker CPU sets need 2 CPUs")


def corral(*args, env=None, cwd=None):
    """Runs `python -m corral *args` with a clean thread-limit environment plus `env`."""
    full_env = {k: v for k, v in os.environ.items() if k not in LIMIT_VARS}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "corral", *args], env=full_env, cwd=cwd, capture_output=True,
                          text=True, timeout=TIMEOUT)


def run_probe(tmp_path, *options, env=None):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    out = corral(*options, str(script), env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def check_workers(report, name, expected_size):
    module, workers = report[name]
    assert module.startswith("corral."), f"{name} built the stdlib's pool: {module}"
    assert len({w["pid"] for w in workers}) == 2, f"{name}: not one answer per worker: {workers}"
    for w in workers:
        assert len(w["affinity"]) == expected_size, (name, w)
        assert w["budget"] == expected_size, (name, w)  # corral inside the worker sees its share
        assert w["env"]["CORRAL_CPUS"] == str(expected_size), (name, w)
    return workers


@needs_two_cpus
def test_process_pools_give_each_worker_its_share_bounded_by_user_limits(tmp_path):
    # The user's values are upper bounds: 1000 is lowered to the share, 1 is kept.
    report = run_probe(tmp_path, env={"OMP_NUM_THREADS": "1000", "MKL_NUM_THREADS": "1"})
    share = len(CPUS) // 2
    for name in POOLS:
        first, second = check_workers(report, name, share)
        assert not set(first["affinity"]) & set(second["affinity"]), (name, first, second)  # disjoint
        for w in (first, second):
            assert w["env"]["OPENBLAS_NUM_THREADS"] == str(share), (name, w)
            assert w["env"]["OMP_NUM_THREADS"] == str(share), (name, w)  # lowered to the share
            assert w["env"]["MKL_NUM_THREADS"] == "1", (name, w)  # below the share: kept
    if HAVE_JOBLIB:
        assert report["joblib_imported_at_start"] is False  # the runner does not import joblib itself
        for w in report["joblib"]:
            assert w["env"]["OPENBLAS_NUM_THREADS"] == w["env"]["CORRAL_CPUS"] == str(len(CPUS) // 2), w
            assert w["env"]["OMP_NUM_THREADS"] == str(len(CPUS) // 2), w
            assert w["env"]["MKL_NUM_THREADS"] == "1", w
            assert w["budget"] == len(CPUS) // 2, w


@needs_two_cpus
def test_factor_widens_and_force_overrides_user_limits(tmp_path):
    report = run_probe(tmp_path, "-f", "2", "--force", env={"OMP_NUM_THREADS": "1"})
    widened = min(len(CPUS), 2 * (len(CPUS) // 2))  # each share of CPUS // 2, widened by 2
    for name in POOLS:
        for w in check_workers(report, name, widened):
            assert w["env"]["OMP_NUM_THREADS"] == w["env"]["OPENBLAS_NUM_THREADS"] == str(widened), (name, w)
    if HAVE_JOBLIB:
        for w in report["joblib"]:
            assert w["env"]["OMP_NUM_THREADS"] == w["env"]["OPENBLAS_NUM_THREADS"] == str(widened), w


def test_joblib_loky_workers_see_the_limits():
    if not HAVE_JOBLIB:
        pytest.skip("joblib is not installed")
    # -p 1: a budget of one CPU, n_jobs 2: each loky worker gets one thread and CORRAL_CPUS=1.
    code = textwrap.dedent("""\
        import os
        from joblib import Parallel, delayed
        def env():
            return tuple(os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                                     "PYTHON_CPU_COUNT", "CORRAL_CPUS"))
        print(sorted(set(Parallel(n_jobs=2, backend="loky")(delayed(env)() for _ in range(4)))))
    """)
    out = corral("-p", "1", "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str([("1", "1", "1", "1", "1")])


JOBLIB_PROBE = textwrap.dedent("""\
    import json, os, time
    import joblib
    from joblib import Parallel, delayed

    def who(_):
        time.sleep(0.5)  # long enough that every worker takes a task
        return os.getpid()

    pids = Parallel(n_jobs=-1)(delayed(who)(i) for i in range(4 * joblib.cpu_count()))
    print(json.dumps({"cpu_count": joblib.cpu_count(), "workers": len(set(pids)),
                      "LOKY_MAX_CPU_COUNT": os.environ.get("LOKY_MAX_CPU_COUNT")}))
""")


@pytest.mark.skipif(not HAVE_JOBLIB, reason="joblib is not installed")
@pytest.mark.parametrize("options", [("-p", "1"), ()])
def test_joblib_n_jobs_follow_the_budget(options):
    # -p 1: joblib.cpu_count() is 1 and n_jobs=-1 runs one worker (as multiprocessing.Pool() gets
    # one); the full budget: as without corral.
    out = corral(*options, "-c", JOBLIB_PROBE)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    expected = 1 if options else len(CPUS)
    assert seen == {"cpu_count": expected, "workers": expected, "LOKY_MAX_CPU_COUNT": str(expected)}
    mine = corral(*options, "-c", JOBLIB_PROBE, env={"LOKY_MAX_CPU_COUNT": "1"})  # lower than any budget: kept
    assert json.loads(mine.stdout)["cpu_count"] == 1, mine.stderr


def test_verbose_names_each_thread_limit_kept_or_lowered():
    out = corral("-v", "-p", "2", "-c", "pass", env={"OMP_NUM_THREADS": "16", "MKL_NUM_THREADS": "1",
                                                     "BLIS_NUM_THREADS": "auto"})
    assert out.returncode == 0, out.stderr
    assert "OMP_NUM_THREADS=16: lowered to each worker's share" in out.stderr
    assert "MKL_NUM_THREADS=1: kept" in out.stderr
    assert "BLIS_NUM_THREADS=auto: kept as you set it" in out.stderr
    forced = corral("-v", "--force", "-c", "pass", env={"OMP_NUM_THREADS": "1"})
    assert "OMP_NUM_THREADS=1: overridden by each worker's share (--force)" in forced.stderr


CPUS_PROBE = textwrap.dedent("""\
    import json, multiprocessing, os
    import corral

    def affinity(_):
        return sorted(os.sched_getaffinity(0))

    # fork: a -c program's functions exist only in this process (3.14's default, forkserver, cannot
    # import them, under plain python as under corral).
    with multiprocessing.get_context("fork").Pool(2) as pool:
        workers = pool.map(affinity, range(2), chunksize=1)
    print(json.dumps({"affinity": affinity(None), "budget": corral.budget().cpus,
                      "CORRAL_CPUS": os.environ.get("CORRAL_CPUS"), "workers": workers}))
""")


def test_cpus_list_restricts_the_whole_program():
    last = CPUS[-1]
    out = corral("--cpus", f"{last}-{last}", "-c", CPUS_PROBE)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["affinity"] == [last]
    assert seen["budget"] == 1  # the budget follows the affinity
    assert seen["CORRAL_CPUS"] is None  # a list sets affinity, not CORRAL_CPUS
    assert seen["workers"] == [[last], [last]]  # more workers than CPUs: each gets the one there is


def test_cpus_count_is_a_budget_not_a_restriction():
    out = corral("-p", "1", "-c", "import json, os, corral; "
                 "print(json.dumps([sorted(os.sched_getaffinity(0)), corral.budget().cpus, "
                 "os.environ['CORRAL_CPUS']]))")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [CPUS, 1, "1"]


@needs_two_cpus
def test_cpus_list_of_several_cpus_and_info():
    listed = f"{CPUS[0]},{CPUS[1]}"
    out = corral("-p", listed, "-c", "import os, corral; print(sorted(os.sched_getaffinity(0)), corral.budget().cpus)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [f"[{CPUS[0]},", f"{CPUS[1]}]", "2"]
    info = corral("--cpus", f"{CPUS[0]}-{CPUS[0]}", "info", "--json", "--no-numpy")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["budget"] == 1


NOT_ALLOWED = max(CPUS) + 1


@pytest.mark.parametrize("args, message", [
    (["--cpus", f"{NOT_ALLOWED}-{NOT_ALLOWED}"], "not allowed to this process"),
    (["--cpus", f"0-{NOT_ALLOWED}"], "not allowed to this process"),
    (["-p", "0-1,x"], "not a CPU id"),
    (["--cpus", "3-1"], "reversed range"),
    (["--cpus", "0,,1"], "empty item"),
    (["--cpus", "0-99999999999"], "out of range"),
    (["--cpus", "0"], "0-0"),  # a count of 0: the message says how to name CPU 0
    (["--cpus", "many"], "CPU list"),
    (["-f", "0.5"], "oversubscription factor"),
    (["--oversubscription-factor", "two"], "oversubscription factor"),
    (["-f", "nan"], "oversubscription factor"),
    (["-f", "inf"], "oversubscription factor"),
])
def test_bad_cpus_and_factors_exit_2_with_a_message(args, message):
    out = corral(*args, "-c", "print('ran')")
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert "ran" not in out.stdout


NATIVE_PROBE = textwrap.dedent("""\
    from concurrent.futures import ThreadPoolExecutor
    from multiprocessing.pool import ThreadPool
    import time
    import numpy, threadpoolctl

    def blas_threads():
        return max(p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")

    with ThreadPool(4) as pool, ThreadPoolExecutor(4) as ex:
        first = pool.apply(blas_threads)
        time.sleep(0.05)  # the first task's wrapper ends just after its result is out: one task at a time
        print(first, ex.submit(blas_threads).result())
""")


@pytest.mark.parametrize("mode, expected", [("static", ["1", "1"]),    # budget 2 // pool size 4
                                            ("dynamic", ["2", "2"])])  # budget 2 // one task running
def test_mode_static_fixes_thread_pool_limits(mode, expected):
    pytest.importorskip("numpy")
    pytest.importorskip("threadpoolctl")
    out = corral("-p", "2", "--mode", mode, "-c", NATIVE_PROBE, env={"OPENBLAS_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == expected


PROCESS_NAMES = textwrap.dedent("""\
    import concurrent.futures, multiprocessing as mp, sys

    def name(_):
        p = mp.current_process()
        return p.name, type(p).__name__

    if __name__ == "__main__":
        for method in ("fork", "spawn", "forkserver"):
            ctx = mp.get_context(method)
            with ctx.Pool(1) as p:
                print(method, p.map(name, [0]), type(p._pool[0]).__name__)
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as ex:
                print(method, list(ex.map(name, [0])))
""")


def test_workers_have_the_stdlibs_process_names(tmp_path):
    # A worker is named after its Process class (a pool renames "SpawnProcess-1" to "SpawnPoolWorker-1"):
    # programs see it in current_process().name, logging's %(processName)s and repr().
    (tmp_path / "names.py").write_text(PROCESS_NAMES)
    plain = run_python(["names.py"], cwd=tmp_path, timeout=120)
    under = run_python(["-m", "corral", "names.py"], cwd=tmp_path, timeout=120)
    assert plain.returncode == under.returncode == 0, under.stderr
    assert under.stdout == plain.stdout
    assert "SpawnPoolWorker-3" in plain.stdout, plain.stdout
