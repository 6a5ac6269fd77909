"""The runner's patch is entered at the program's first import of a pool module (src/corral/_deferred_patch.py;
docs/architecture.md, "Start-up"): a program without pools imports none of them, and one with pools gets
corral's whatever way it reaches them, in the runner's process and in every child Python."""

from __future__ import annotations

import sys
import textwrap

import pytest

from _helpers import run_python

POOL_MODULES = ("multiprocessing.pool", "concurrent.futures", "concurrent.futures.thread", "corral._patch",
                "corral._thread_pool", "corral._permits")
# What the child's start path must not import either (dataclasses imports inspect, some 10 ms). The runner
# may: on 3.14 its argparse parser imports them (_colorize), as any program's argparse does.
HEAVY_MODULES = ("dataclasses", "inspect")

LOADED = f"import sys, multiprocessing; print(sorted(m for m in {POOL_MODULES!r} if m in sys.modules))"
LOADED_IN_CHILD = (f"import sys, multiprocessing; "
                   f"print(sorted(m for m in {POOL_MODULES + HEAVY_MODULES!r} if m in sys.modules))")


def _as_child(code: str) -> str:
    """A program that runs `code` in a child Python (subprocess) and prints what the child printed."""
    return (f"import subprocess, sys; r = subprocess.run([sys.executable, '-c', {code!r}], capture_output=True, "
            "text=True); print(r.stdout.strip() or r.stderr)")


def test_a_program_without_pools_imports_no_pool_module():
    # multiprocessing itself is not a pool module: programs import it for Process, Queue or cpu_count()
    plain = run_python(["-c", LOADED])
    under = run_python(["-m", "corral", "-c", LOADED])
    child = run_python(["-m", "corral", "-c", _as_child(LOADED_IN_CHILD)])
    assert plain.returncode == under.returncode == child.returncode == 0, plain.stderr + under.stderr + child.stderr
    assert plain.stdout.strip() == "[]"
    assert under.stdout.strip() == "[]", under.stdout  # before: all of them, some 40 ms at every start
    assert child.stdout.strip() == "[]", child.stdout


# A program that makes only a process pool: no concurrent.futures (nor the logging it imports, some 9 ms in all)
# under corral either, in the runner's process and in a child's.
POOL_ONLY = ("import sys, multiprocessing as m\n"
             "if __name__ == '__main__':\n"
             "    with m.Pool(1) as p: p.map(abs, [1])\n"
             "    print(sorted(x for x in ('concurrent.futures', 'concurrent.futures.thread', 'logging') "
             "if x in sys.modules))")


def test_a_program_with_only_a_process_pool_imports_no_concurrent_futures():
    plain = run_python(["-c", POOL_ONLY], timeout=120)
    under = run_python(["-m", "corral", "-c", POOL_ONLY], timeout=120)
    child = run_python(["-m", "corral", "-c", _as_child(POOL_ONLY)], timeout=120)
    assert plain.returncode == under.returncode == child.returncode == 0, plain.stderr + under.stderr + child.stderr
    assert "concurrent.futures" not in plain.stdout, plain.stdout
    assert under.stdout == plain.stdout, under.stdout  # before: concurrent.futures and logging, imported by the patch
    assert child.stdout == plain.stdout, child.stdout


# Each way a program reaches a stdlib pool, first thing, and whether what it built is corral's.
REACHES = {
    "from concurrent.futures import ThreadPoolExecutor":
        "from concurrent.futures import ThreadPoolExecutor as C; p = C(1); k = corral.ThreadPoolExecutor",
    "import concurrent.futures.thread":
        "import concurrent.futures.thread as t; p = t.ThreadPoolExecutor(1); k = corral.ThreadPoolExecutor",
    "from multiprocessing.pool import ThreadPool":
        "from multiprocessing.pool import ThreadPool as C; p = C(1); k = corral.ThreadPool",
    "multiprocessing.dummy.Pool":
        "import multiprocessing.dummy as d; p = d.Pool(1); k = corral.ThreadPool",
    "multiprocessing.Pool": "import multiprocessing as m; p = m.Pool(1); k = corral.Pool",
    "a spawn context's Pool": "import multiprocessing as m; p = m.get_context('spawn').Pool(1); k = corral.Pool",
    "Pool after Process": "import multiprocessing as m; q = m.Process(target=print); q.start(); q.join(); "
                          "p = m.Pool(1); k = corral.Pool",
    "ProcessPoolExecutor":
        "from concurrent.futures import ProcessPoolExecutor as C; p = C(1); k = corral.ProcessPoolExecutor",
    # corral's own module first: it imports multiprocessing.pool at its top, where the patch cannot be
    # imported yet; the patch is entered once that import is done.
    "corral._thread_pool first":
        "import corral._thread_pool; from concurrent.futures import ThreadPoolExecutor as C; p = C(1); "
        "k = corral.ThreadPoolExecutor",
    # corral's public pool first (PEP 562 imports corral._thread_pool, which imports multiprocessing.pool at its
    # top), then the stdlib's module, already imported by then
    "corral.ThreadPool first":
        "corral.ThreadPool; from multiprocessing.pool import ThreadPool as C; p = C(1); k = corral.ThreadPool",
    # a private module of corral's first, whose own imports are corral's (a child's patch is made only once
    # none of corral's modules is halfway through its import: it imports them)
    "corral._pool_settings first":
        "import corral._pool_settings; from concurrent.futures import ThreadPoolExecutor as C; p = C(1); "
        "k = corral.ThreadPoolExecutor",
    # sys.meta_path saved before corral starts the patch (corral.budget() imports one of corral's modules, where
    # a child's patch starts) and restored after (pytest's pytester does): the hooks are in the saved list
    "sys.meta_path restored":
        "import sys; saved = list(sys.meta_path); corral.budget(); sys.meta_path[:] = saved; "
        "from concurrent.futures import ThreadPoolExecutor as C; p = C(1); k = corral.ThreadPoolExecutor",
    # a lookup first, which imports nothing
    "find_spec first":
        "import importlib.util; importlib.util.find_spec('concurrent.futures'); "
        "from concurrent.futures import ThreadPoolExecutor as C; p = C(1); k = corral.ThreadPoolExecutor",
    # concurrent.futures after a process pool entered the patch: its pools are patched as it is imported
    "ThreadPoolExecutor after a Pool":
        "import multiprocessing as m; q = m.Pool(1); q.close(); q.join(); "
        "from concurrent.futures import ThreadPoolExecutor as C; p = C(1); k = corral.ThreadPoolExecutor",
    "ProcessPoolExecutor after a Pool":
        "import multiprocessing as m; q = m.Pool(1); q.close(); q.join(); "
        "from concurrent.futures import ProcessPoolExecutor as C; p = C(1); k = corral.ProcessPoolExecutor",
    # ... also where the program restored sys.meta_path in between (the patch's own hook, added as it was
    # entered, is gone then; the runner's and a child's, there from the start, are not)
    "ThreadPoolExecutor after a Pool, sys.meta_path restored":
        "import sys, multiprocessing as m; saved = list(sys.meta_path); q = m.Pool(1); q.close(); q.join(); "
        "sys.meta_path[:] = saved; from concurrent.futures import ThreadPoolExecutor as C; p = C(1); "
        "k = corral.ThreadPoolExecutor",
    # ... and where concurrent.futures' import was under way as the patch was entered (another thread's, here
    # a finder of the program's that imports multiprocessing.pool in the middle of it)
    "ThreadPoolExecutor whose import enters the patch halfway":
        "import sys\nclass F:\n def find_spec(self, name, path, target=None):\n"
        "  if name == 'concurrent.futures._base': import multiprocessing.pool\n"
        "sys.meta_path.insert(0, F())\n"
        "from concurrent.futures import ThreadPoolExecutor as C; p = C(1); k = corral.ThreadPoolExecutor",
    # corral's executors first: their own import imports concurrent.futures, whose patch waits for it to end
    "corral.ThreadPoolExecutor first":
        "corral.ThreadPoolExecutor; import concurrent.futures as f; p = f.ThreadPoolExecutor(1); "
        "k = corral.ThreadPoolExecutor",
    "corral.ProcessPoolExecutor first":
        "corral.ProcessPoolExecutor; import concurrent.futures as f; p = f.ProcessPoolExecutor(1); "
        "k = corral.ProcessPoolExecutor",
    # the first import in another thread than the main one
    "from a thread":
        "import threading; got = []; t = threading.Thread(target=lambda: got.append(__import__("
        "'concurrent.futures').futures.ThreadPoolExecutor(1))); t.start(); t.join(); p = got[0]; "
        "k = corral.ThreadPoolExecutor",
}


def _reach_program(reach: str) -> str:
    return "import corral\n" + REACHES[reach] + textwrap.dedent("""
        try:
            print(isinstance(p, k), type(p).__module__)
        finally:
            p.shutdown() if hasattr(p, "shutdown") else (p.close(), p.join())
    """)


@pytest.mark.parametrize("reach", sorted(REACHES))
@pytest.mark.parametrize("where", ["runner", "child"])
def test_a_pool_module_imported_first_gives_corrals_pools(reach, where):
    code = _reach_program(reach)
    proc = run_python(["-m", "corral", "-c", code if where == "runner" else _as_child(code)], timeout=120)
    plain = run_python(["-c", code], timeout=120)
    assert proc.returncode == 0 and plain.returncode == 0, proc.stderr + plain.stderr
    # the same class name as plain python's (invariant 8), but corral's class
    assert proc.stdout.split() == ["True", plain.stdout.split()[1]], (proc.stdout, plain.stdout)
    assert plain.stdout.split()[0] == "False"


def test_verbose_lists_the_patch_at_once():
    proc = run_python(["-m", "corral", "-v", "-c", LOADED])
    assert proc.returncode == 0, proc.stderr
    assert "corral: patched concurrent.futures.ThreadPoolExecutor -> corral.ThreadPoolExecutor" in proc.stderr
    assert "'corral._patch'" in proc.stdout  # -v enters it to list it


def test_a_runner_in_a_child_leaves_the_childs_deferred_patch(tmp_path):
    # The runner started as a child ends the child's patch (still deferred) and starts its own, with its options.
    inner = ("import corral._pool_settings as s, concurrent.futures as f, corral._patch as p; "
             "print(s.get()['mode'], p.is_patched(), p._depth)")
    code = ("import subprocess, sys; "
            f"subprocess.run([sys.executable, '-m', 'corral', '--mode', 'static', '-c', {inner!r}])")
    proc = run_python(["-m", "corral", "-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["static", "True", "1"], proc.stdout


def test_the_library_list_is_the_patchs():
    import corral._deferred_patch as deferred
    import corral._patch as patch

    import corral._dask_worker as dask_worker

    # The patch also patches concurrent.futures on import, which is a trigger of the deferred patch's.
    assert patch.FUTURES_MODULE in deferred.TRIGGER_MODULES
    assert sorted(deferred.LIBRARY_MODULES) == sorted(set(patch._ON_IMPORT) - {patch.FUTURES_MODULE})
    assert {dask_worker.NANNY_MODULE, dask_worker.WORKER_MODULE} <= set(patch._ON_IMPORT)
    assert sys.modules["corral._patch"] is patch


# Programs whose output must be plain python's under the runner, each a way the first pool import once went
# wrong when the patch was entered at it.
SAME_AS_PLAIN = {
    # the first pool module imported by a thread that outlives the main script (interpreter shutdown has
    # begun: concurrent.futures.thread can no longer register its exit, which the patch imports)
    "first pool after the main script": """\
        import threading, time, multiprocessing
        def worker():
            time.sleep(0.1)
            with multiprocessing.Pool(2) as p:
                print("results", p.map(abs, [-1, -2]))
        threading.Thread(target=worker).start()
        print("main script done")
    """,
    # the Python docs' lazy import recipe: the module runs when first used, entering the patch, which patches it
    # at once (it is not "being imported"): once hung on the deferred patch's lock, taken again by the report of
    # corral's own module the patch imported meanwhile
    "concurrent.futures imported lazily": """\
        import sys, importlib.util
        spec = importlib.util.find_spec("concurrent.futures")
        spec.loader = importlib.util.LazyLoader(spec.loader)
        cf = importlib.util.module_from_spec(spec)
        sys.modules["concurrent.futures"] = cf
        spec.loader.exec_module(cf)
        with cf.ThreadPoolExecutor(1) as e:
            print(e.submit(pow, 2, 3).result())
    """,
    "first Future in atexit": """\
        import atexit, threading
        atexit.register(lambda: print("atexit:", __import__("concurrent.futures").futures.Future().done()))
    """,
    # entering the patch collects none of the program's objects: no finalizer runs inside its import statement
    "no finalizer inside the import": """\
        import gc
        class Conn:
            def __del__(self): print("Conn finalized")
        c = Conn(); c.self = c
        gc.collect(1)
        del c
        print("before import")
        import multiprocessing as mp; mp.Pool(1).terminate()
        print("after import")
    """,
    # the module keeps its real loader
    "loader": """\
        import importlib.machinery, concurrent.futures as cf, multiprocessing.pool as mpp
        print(type(cf.__loader__).__name__, type(mpp.__spec__.loader).__name__, cf.__spec__.loader is cf.__loader__)
        print(isinstance(cf.__loader__, importlib.machinery.SourceFileLoader))
    """,
    # a finder the program puts first and takes off again: the hooks the patch adds at the first pool import
    # (for joblib and Dask, not imported yet) go after it, not first
    "the program's finder first": """\
        import sys
        class Mine:
            def find_spec(self, *args):
                return None
        sys.meta_path.insert(0, Mine())
        import concurrent.futures, multiprocessing.pool
        print(type(sys.meta_path.pop(0)).__name__, any(type(f).__name__ == "Mine" for f in sys.meta_path))
    """,
    # the environment does not change at the first pool import
    "environment": """\
        import os
        before = dict(os.environ)
        import concurrent.futures
        print({k: v for k, v in os.environ.items() if before.get(k) != v})
    """,
}


@pytest.mark.parametrize("name", sorted(SAME_AS_PLAIN))
@pytest.mark.parametrize("where", ["runner", "child"])
def test_the_first_pool_import_is_invisible(name, where):
    code = textwrap.dedent(SAME_AS_PLAIN[name])
    code = code if where == "runner" else _as_child(code)
    plain = run_python(["-c", code], timeout=120)
    under = run_python(["-m", "corral", "-c", code], timeout=120)
    assert (under.returncode, under.stdout, under.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    assert plain.returncode == 0, plain.stderr


def test_a_program_module_named_like_one_the_patch_needs_leaves_the_pools_the_stdlibs(tmp_path):
    # random.py beside the script: the patch imports tempfile (through multiprocessing), which imports random.
    # Its import fails; the program runs as under plain python, on the stdlib's pools (it failed with an
    # ImportError out of corral's import before).
    (tmp_path / "random.py").write_text("def pick(xs):\n    return xs[0]\n")
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent("""\
        from concurrent.futures import ThreadPoolExecutor
        import random
        with ThreadPoolExecutor(2) as ex:
            print(list(ex.map(random.pick, [[1], [2]])))
    """))
    plain = run_python([str(script)], cwd=tmp_path)
    under = run_python(["-m", "corral", str(script)], cwd=tmp_path)
    assert (under.returncode, under.stdout, under.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    assert plain.stdout == "[1, 2]\n"


# A KeyboardInterrupt (what a SIGINT handler raises) once, at the first call of corral's `function` in `file`
# while the program's first pool import starts the patch; the program catches it and imports again.
INTERRUPTED_START = textwrap.dedent("""\
    import sys
    function, file = sys.argv[1], sys.argv[2]
    fired = []
    def tracer(frame, event, arg):
        if event == "call" and not fired and frame.f_code.co_name == function \\
                and frame.f_code.co_filename.endswith(file):
            fired.append(1)
            sys.settrace(None)
            raise KeyboardInterrupt
    sys.settrace(tracer)
    try:
        import concurrent.futures
    except KeyboardInterrupt:
        print("interrupted")
    sys.settrace(None)
    import concurrent.futures, corral
    ex = concurrent.futures.ThreadPoolExecutor(1)
    print(bool(fired), isinstance(ex, corral.ThreadPoolExecutor))
    ex.shutdown()
""")


# The runner made and started its patch before the program; a child makes it at its first pool import.
@pytest.mark.parametrize("where, function, file", [
    ("runner", "_enter", "_deferred_patch.py"), ("child", "_enter", "_deferred_patch.py"),
    ("child", "start", "_deferred_patch.py"), ("child", "__init__", "_deferred_patch.py")])
def test_a_patch_start_interrupted_is_tried_again_at_the_next_import(tmp_path, where, function, file):
    (tmp_path / "prog.py").write_text(INTERRUPTED_START)
    run = ["prog.py", function, file]
    if where == "child":
        run = ["-c", f"import subprocess, sys; r = subprocess.run([sys.executable, *{run!r}], capture_output=True, "
                     "text=True); print(r.stdout.strip() or r.stderr)"]
    proc = run_python(["-m", "corral", *run], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["interrupted", "True", "True"], proc.stdout
