"""`python -m corral [options] script.py|-m module|-c code [args]` behaves as plain python would."""

import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from _helpers import enter_group, quota_group
from _helpers import run_python as run

SHOW = textwrap.dedent("""\
    import json, os, sys
    print(json.dumps({"argv": sys.argv, "name": __name__, "path0": sys.path[0],
                      "file": globals().get("__file__"), "cpus": os.environ.get("CORRAL_CPUS")}))
""")


def both(tmp_path, python_args, corral_options=()):
    """The same program under plain python and under corral."""
    plain = run(python_args, cwd=tmp_path)
    under = run(["-m", "corral", *corral_options, *python_args], cwd=tmp_path)
    return plain, under


@pytest.fixture
def script(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "show.py"
    path.write_text(SHOW)
    return path


def test_script_sees_argv_main_and_path_as_under_python(tmp_path, script):
    plain, under = both(tmp_path, ["sub/show.py", "a", "-v", "--cpus", "3"])
    assert plain.returncode == under.returncode == 0, under.stderr
    assert under.stdout == plain.stdout
    assert '"name": "__main__"' in under.stdout


def test_options_before_the_script_are_corrals(tmp_path, script):
    under = run(["-m", "corral", "-p", "3", "--mode", "static", "sub/show.py", "-p", "9"], cwd=tmp_path)
    assert under.returncode == 0, under.stderr
    assert '"argv": ["sub/show.py", "-p", "9"]' in under.stdout
    assert '"cpus": "3"' in under.stdout  # exported: children inherit the budget


def test_cpus_reaches_child_processes(tmp_path):
    code = ("import subprocess, sys; "
            "subprocess.run([sys.executable, '-c', 'import os; print(os.environ[\"CORRAL_CPUS\"])'])")
    under = run(["-m", "corral", "--cpus", "1", "-c", code], cwd=tmp_path)
    assert under.returncode == 0, under.stderr
    assert under.stdout.strip() == "1"


def test_a_script_alone_is_parsed_as_the_parser_parses_it():
    from corral import _runner

    assert vars(_runner.plain_target_args(["x.py"])) == vars(_runner.build_parser().parse_args(["x.py"]))
    for own in (["-p", "2", "x.py"], ["-"], ["-c", "pass"], ["-m", "x"], ["--share", "x.py"], []):
        assert _runner.plain_target_args(own) is None, own  # the parser's


def test_a_script_under_the_runner_finds_no_module_of_corrals_command_line_loaded(tmp_path):
    # argparse and what it loads as it parses (gettext, locale, shutil) are 5-10 ms of a start; a program
    # that never imports them finds them absent, as under plain python. So are pkgutil and the typing it imports
    # (3 ms), which looking for a path hook that takes the script (a directory, a zip) once imported.
    script = tmp_path / "modules.py"
    script.write_text("import sys; print([m in sys.modules for m in "
                      "('argparse', 'gettext', 'locale', 'shutil', 'pkgutil', 'typing')], "
                      "repr(sys.path_importer_cache.get(__file__, 'absent')))\n")
    plain = run([str(script)])
    under = run(["-m", "corral", str(script)])
    assert under.returncode == plain.returncode == 0, under.stderr
    # python looked for a path hook that takes the script, and cached that none does
    assert plain.stdout == "[False, False, False, False, False, False] None\n"
    assert under.stdout == plain.stdout


def test_dash_m_module(tmp_path, script):
    plain, under = both(tmp_path / "sub", ["-m", "show", "x", "-c", "y"])
    assert under.returncode == plain.returncode == 0, under.stderr
    assert under.stdout == plain.stdout


def test_dash_c_code(tmp_path):
    code = "import sys; print(sys.argv, repr(sys.path[0]), __name__)"
    plain, under = both(tmp_path, ["-c", code, "one", "-m", "two"])
    assert under.returncode == 0, under.stderr
    assert under.stdout == plain.stdout


@pytest.mark.parametrize("body, status", [
    ("import sys; sys.exit(3)", 3),
    ("import sys; sys.exit('bye')", 1),
    ("raise SystemExit(0)", 0),
    ("pass", 0),
])
def test_exit_status(tmp_path, body, status):
    (tmp_path / "prog.py").write_text(body)
    plain, under = both(tmp_path, ["prog.py"])
    assert plain.returncode == under.returncode == status
    assert under.stderr == plain.stderr


def test_inspect_mode_gets_the_prompt_as_under_python(tmp_path):
    # python -i runs the prompt after the program; a SystemExit(0) of the runner's own would be printed
    # there as a traceback.
    (tmp_path / "prog.py").write_text("x = 41\n")
    outs = [subprocess.run([sys.executable, "-i", *mode, "prog.py"], cwd=tmp_path, input="print(x + 1)\n",
                           capture_output=True, text=True, timeout=60) for mode in ([], ["-m", "corral"])]
    plain, under = outs
    assert plain.returncode == under.returncode == 0
    assert under.stdout == plain.stdout == "42\n"
    assert under.stderr == plain.stderr, under.stderr


def test_uncaught_exception_prints_pythons_traceback(tmp_path):
    (tmp_path / "boom.py").write_text("def explode():\n    raise ValueError('kaboom')\n\nexplode()\n")
    plain, under = both(tmp_path, ["boom.py"])
    assert plain.returncode == under.returncode == 1
    assert under.stderr == plain.stderr
    assert "in explode" in under.stderr and "ValueError: kaboom" in under.stderr


def same(plain, under):
    """Exit status, stdout and stderr (object addresses aside) as plain python's."""
    def text(out):
        return re.sub(r"0x[0-9a-f]+", "0x?", out)
    assert (under.returncode, text(under.stdout), text(under.stderr)) == \
        (plain.returncode, text(plain.stdout), text(plain.stderr))


# Ctrl-C: python prints the traceback, waits for non-daemon threads, runs atexit handlers, finalizes
# (an unclosed file's buffer is written), and only then ends by SIGINT.
KBINT = textwrap.dedent("""\
    import atexit, sys, threading, time
    atexit.register(lambda: print("atexit ran", file=sys.stderr))
    f = open("out.txt", "w")
    f.write("data")
    def late():
        time.sleep(0.2)
        print("thread done", flush=True)
    threading.Thread(target=late).start()
    def interrupted():
        raise KeyboardInterrupt
    interrupted()
""")


@pytest.mark.parametrize("form", ["script", "-m", "-c"])
def test_uncaught_keyboard_interrupt_finalizes_then_ends_by_sigint(tmp_path, form):
    (tmp_path / "intr.py").write_text(KBINT)
    args = {"script": ["intr.py"], "-m": ["-m", "intr"], "-c": ["-c", KBINT]}[form]
    plain = run(args, cwd=tmp_path)
    assert (tmp_path / "out.txt").read_text() == "data"
    (tmp_path / "out.txt").unlink()
    under = run(["-m", "corral", *args], cwd=tmp_path)
    assert (tmp_path / "out.txt").read_text() == "data"
    assert plain.returncode == -signal.SIGINT
    same(plain, under)
    assert "atexit ran" in under.stderr and "thread done" in under.stdout


@pytest.mark.parametrize("body", [
    "import sys; print('out'); sys.exit(3)",
    "import sys; sys.exit('bye')",
    "import os; print('lost in the buffer'); os._exit(7)",
    "import sys, threading; t = threading.Thread(target=sys.exit, args=(4,)); t.start(); t.join(); print('on')",
    "import atexit\ndef bad():\n    raise RuntimeError('in atexit')\natexit.register(bad)\nprint('body')",
    "import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.2), print('late'))).start()\nprint('main')",
    "def f():\n    try:\n        1 / 0\n    except ZeroDivisionError as e:\n"
    "        raise ValueError('chained') from e\nf()",
    "import sys, traceback\n"
    "sys.excepthook = lambda t, v, tb: print('hook', [f.name for f in traceback.extract_tb(tb)])\n"
    "def g():\n    raise OSError('x')\ng()",
    "def broken(:\n    pass",
])
@pytest.mark.parametrize("form", ["script", "-m"])
def test_endings_match_plain_python(tmp_path, body, form):
    (tmp_path / "prog.py").write_text(body + "\n")
    args = ["prog.py"] if form == "script" else ["-m", "prog"]
    same(*both(tmp_path, args))


@pytest.mark.parametrize("source", [
    b"print('x')\x00\n",  # python's file tokenizer: "source code cannot contain null bytes", line 1
    b"# -*- coding: bogus -*-\nprint('x')\n",  # "encoding problem: bogus"; compile() words it otherwise
    b"print('\xff')\n",  # not UTF-8
    b"def broken(:\n    pass\n",
])
def test_a_script_that_does_not_compile_gets_pythons_own_words(tmp_path, source):
    (tmp_path / "prog.py").write_bytes(source)
    plain, under = both(tmp_path, ["prog.py", "arg"])
    same(plain, under)
    assert under.returncode == 1 and "Error" in under.stderr


def test_missing_script_is_pythons_message_and_status(tmp_path):
    same(*both(tmp_path, ["nope.py"]))
    same(*both(tmp_path, ["../sub/./nope.py", "arg"]))


def test_missing_module(tmp_path):
    plain, under = both(tmp_path, ["-m", "no_such_module_here"])
    same(plain, under)
    assert under.returncode == 1 and "No module named no_such_module_here" in under.stderr


def test_stdin_program(tmp_path):
    code = "import sys; print(sys.argv, repr(sys.path[0]), __file__, __loader__, sorted(globals()))\n"
    plain = subprocess.run([sys.executable, "-", "a", "-p"], input=code, cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    under = subprocess.run([sys.executable, "-m", "corral", "-", "a", "-p"], input=code, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    same(plain, under)
    assert "['-', 'a', '-p']" in under.stdout


def test_directory_and_zip_run_their_main(tmp_path):
    main = "import sys; print(sys.argv, sys.path[0], __file__, __spec__.name, __name__)\n"
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__main__.py").write_text(main)
    same(*both(tmp_path, ["app", "x"]))
    same(*both(tmp_path, ["./app/", "x"]))
    import zipfile

    with zipfile.ZipFile(tmp_path / "app.zip", "w") as z:
        z.writestr("__main__.py", main)
    same(*both(tmp_path, ["app.zip", "y"]))
    (tmp_path / "empty").mkdir()
    plain, under = both(tmp_path, ["empty"])
    same(plain, under)
    assert under.returncode == 1 and "can't find '__main__' module" in under.stderr


BAD_INPUT = [
    (["-p", "99999"], {}, "at most 65536"),
    (["-p", "0"], {}, "at least 1"),
    (["-p", "-1"], {}, "at least 1"),  # a count below 1, not a CPU list with an empty item
    (["-p", "abc"], {}, "'abc'"),
    (["--bogus"], {}, "--bogus"),
    (["--mode", "fast"], {}, "fast"),
    ([], {"CORRAL_CPUS": "garbage"}, "CORRAL_CPUS"),
    ([], {"CORRAL_CPUS": "0"}, "CORRAL_CPUS"),
    ([], {"CORRAL_CPUS": "-1"}, "CORRAL_CPUS"),
    ([], {"CORRAL_CPUS": "99999"}, "CORRAL_CPUS"),
    ([], {"CORRAL_CPUS": "2\udcff"}, 'CORRAL_CPUS="2\\xff"'),  # the byte 0xff (os.fsencode): not UTF-8
]


@pytest.mark.parametrize("options, env, message", BAD_INPUT)
def test_bad_input_is_refused_before_the_program_starts(tmp_path, options, env, message):
    (tmp_path / "prog.py").write_text("open('ran', 'w').close()\n")
    under = run(["-m", "corral", *options, "prog.py"], cwd=tmp_path, env=env)
    assert under.returncode == 2
    assert under.stderr.startswith("python -m corral: ") and under.stderr.count("\n") == 1, under.stderr
    assert message in under.stderr
    assert not (tmp_path / "ran").exists()


def test_nothing_to_run_is_exit_2(tmp_path):
    under = run(["-m", "corral"], cwd=tmp_path)
    assert under.returncode == 2 and under.stderr.count("\n") == 1


def test_help_describes_the_options():
    under = run(["-m", "corral", "--help"])
    assert under.returncode == 0
    for word in ("--cpus", "--verbose", "--no-native", "--mode", "static", "budget // pool size", "info",
                 "--oversubscription-factor", "--force", "N|LIST", "3-3", "ProcessPoolExecutor",
                 "multiprocessing.Pool", "joblib", "OMP_NUM_THREADS", "file.zip", "stdin", "__mp_main__",
                 "upper bound", "SIGINT", "malformed CORRAL_CPUS", "own calls", "OPENBLAS_THREAD_TIMEOUT=22"):
        assert word in under.stdout


def test_info_is_a_subcommand_and_a_script_named_info_runs_as_dot_slash(tmp_path):
    info = run(["-m", "corral", "-p", "1", "info", "--json", "--no-numpy"], cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert '"budget": 1' in info.stdout
    (tmp_path / "info").write_text("print('the script')\n")
    script = run(["-m", "corral", "./info"], cwd=tmp_path)
    assert script.returncode == 0 and script.stdout == "the script\n"


def test_program_runs_with_the_pools_patched(tmp_path):
    code = textwrap.dedent("""\
        from concurrent.futures import ThreadPoolExecutor
        from multiprocessing.pool import ThreadPool
        import corral
        with ThreadPoolExecutor(4) as ex, ThreadPool(3) as pool:
            print(isinstance(ex, corral.ThreadPoolExecutor), isinstance(pool, corral.ThreadPool),
                  sum(ex.map(abs, range(-5, 5))), pool.map(abs, [-1, 2]))
    """)
    under = run(["-m", "corral", "-c", code])
    assert under.returncode == 0, under.stderr
    assert under.stdout.split() == ["True", "True", "25", "[1,", "2]"]


def test_verbose_reports_patches_and_limits(tmp_path):
    under = run(["-m", "corral", "-v", "-p", "2", "-c", "pass"])
    assert under.returncode == 0, under.stderr
    assert "budget 2" in under.stderr
    assert "ThreadPoolExecutor" in under.stderr and "ThreadPool" in under.stderr
    assert "native limits" in under.stderr
    quiet = run(["-m", "corral", "--no-native", "-v", "-c", "pass"])
    assert "untouched" in quiet.stderr
    assert "emulating a bigger machine" not in under.stderr or len(os.sched_getaffinity(0)) < 2
    emulated = len(os.sched_getaffinity(0)) + 2  # as `corral info` says of a budget above the hardware
    bigger = run(["-m", "corral", "-v", "-p", str(emulated), "-c", "pass"])
    assert f"budget {emulated} CPUs" in bigger.stderr and "emulating a bigger machine" in bigger.stderr


def test_verbose_reports_cpus_and_process_pools():
    cpu = sorted(os.sched_getaffinity(0))[-1]
    under = run(["-m", "corral", "-v", "--cpus", f"{cpu}-{cpu}", "-f", "1.5", "--force", "-c", "pass"])
    assert under.returncode == 0, under.stderr
    assert f"CPUs {cpu} " in under.stderr and "budget 1" in under.stderr
    for patched in ("multiprocessing.pool.Pool", "BaseContext.Pool", "concurrent.futures.ProcessPoolExecutor",
                    "joblib"):
        assert patched in under.stderr
    assert "factor 1.5" in under.stderr and "overridden (--force)" in under.stderr


SPIN_PROBE = textwrap.dedent("""\
    import ctypes, os, subprocess, sys
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    c_env = libc.getenv(b"OPENBLAS_THREAD_TIMEOUT")  # what OpenBLAS reads as it loads
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"],
                           capture_output=True, text=True).stdout.strip()
    print(os.environ.get("OPENBLAS_THREAD_TIMEOUT"), c_env and c_env.decode(), child)
""")


@pytest.mark.parametrize("user", [None, "28"])
def test_openblas_spins_briefly_and_the_program_does_not_see_it(user):
    """OpenBLAS reads a spin time of 2**22 cycles (not its 2**28: ~0.1 s of a core after each call), the
    program's os.environ is python's, and a value the user set is kept (docs/native.md, "Spinning")."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if user:
        env["OPENBLAS_THREAD_TIMEOUT"] = user
    out = subprocess.run([sys.executable, "-m", "corral", "-c", SPIN_PROBE], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    if user:
        assert out.stdout.split() == [user, user, user]
    else:
        # os.environ as under plain python; the C environment (and so children) have 22
        assert out.stdout.split() == ["None", "22", "22"]
    plain = subprocess.run([sys.executable, "-c", SPIN_PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert plain.stdout.split() == ([user] * 3 if user else ["None", "None", "None"])


def test_no_native_leaves_openblas_spinning_alone():
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-m", "corral", "--no-native", "-c", SPIN_PROBE], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["None", "None", "None"], out.stderr


# numpy loaded before the runner decides the program's limits (as a sitecustomize or a .pth file would load it):
# the runner then lowers its OpenBLAS where the variable it read allowed more than the budget.
LOADED_FIRST = ("import numpy, runpy, sys; sys.argv = ['corral', '-p', '1', '-c', 'import corral; "
                "print([p[\"num_threads\"] for p in corral.native_pools() if p[\"library\"] == \"openblas\"])']; "
                "runpy.run_module('corral', run_name='__main__', alter_sys=True)")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs in the affinity mask")
@pytest.mark.parametrize("user", [None, "2", "1"])
def test_libraries_loaded_before_the_runner_are_lowered_to_the_budget(user):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "OMP_", "OPENBLAS_"))}
    if user:
        env["OPENBLAS_NUM_THREADS"] = user
    out = subprocess.run([sys.executable, "-c", LOADED_FIRST], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[1]"], out.stdout


# Objects of classes defined in __main__ cross process boundaries both ways (argument and result).
MAIN_PICKLE = textwrap.dedent("""\
    import multiprocessing as mp, sys
    from concurrent.futures import ProcessPoolExecutor

    class Point:
        def __init__(self, x):
            self.x = x

    def grow(p):
        return Point(p.x + 1)

    if __name__ == "__main__":
        print(sys.modules["__mp_main__"] is sys.modules["__main__"], sys.modules["__main__"].Point is Point)
        if sys.argv[1] != "none":
            ctx = mp.get_context(sys.argv[1])
            with ctx.Pool(1) as pool:
                print("pool", pool.apply(grow, (Point(1),)).x)
            with ProcessPoolExecutor(1, mp_context=ctx) as ex:
                print("executor", ex.submit(grow, Point(2)).result(timeout=60).x)
""")


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
@pytest.mark.parametrize("form", ["script", "-m"])
def test_main_classes_cross_process_boundaries(tmp_path, form, method):
    (tmp_path / "points.py").write_text(MAIN_PICKLE)
    args = (["points.py"] if form == "script" else ["-m", "points"]) + [method]
    under = run(["-m", "corral", *args], cwd=tmp_path, timeout=120)
    assert under.returncode == 0, under.stderr
    assert under.stdout.split("\n") == ["True True", "pool 2", "executor 3", ""]


def test_main_module_under_dash_c_is_mp_main(tmp_path):
    plain, under = both(tmp_path, ["-c", MAIN_PICKLE, "none"])
    same(plain, under)
    assert under.stdout == "True True\n"


# The program's own BLAS calls (outside any pool) get at most budget threads: libraries size themselves
# from the CPUs they see, not from a cgroup quota or CORRAL_CPUS.
BLAS = textwrap.dedent("""\
    import os, numpy as np, corral
    np.ones((64, 64)) @ np.ones((64, 64))
    print(corral.budget().cpus, corral.budget().decided_by,
          max(p["num_threads"] for p in corral.native_pools()), os.environ.get("OPENBLAS_NUM_THREADS"), sep="|")
""")
_LIMIT_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "GOTO_NUM_THREADS", "CORRAL_MANAGED_ENV")


def _blas(args, prefix=(), **env):
    clean = {k: v for k, v in os.environ.items() if k not in _LIMIT_VARS and k != "CORRAL_CPUS"}
    clean.update(env)
    out = subprocess.run([*prefix, sys.executable, *args, "-c", BLAS], env=clean, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split("|"), out.stderr  # (cpus, source, threads, env), -v text


def _two_cpus():
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs: a budget of 1 below the CPUs the libraries see")


def test_budget_caps_the_programs_own_blas_calls():
    _two_cpus()
    pytest.importorskip("numpy")
    visible = str(len(os.sched_getaffinity(0)))
    assert _blas([], CORRAL_CPUS="1")[0][2] == visible  # plain python: one thread per visible CPU
    (cpus, source, threads, var), report = _blas(["-m", "corral", "-v", "-p", "1"])
    assert (cpus, threads, var) == ("1", "1", "1")
    assert "OPENBLAS_NUM_THREADS=1: set" in report
    # A value the user set is an upper bound like the budget: the lower wins.
    (_, _, threads, var), report = _blas(["-m", "corral", "-v", "-p", "1"], OPENBLAS_NUM_THREADS=visible)
    assert (threads, var) == ("1", "1")
    assert f"OPENBLAS_NUM_THREADS=1 (was {visible}): lowered" in report
    (_, _, threads, var), report = _blas(["-m", "corral", "-v"], OPENBLAS_NUM_THREADS="1")
    assert (threads, var) == ("1", "1") and "left alone" in report
    # A budget not below the visible CPUs changes nothing; nor does --no-native.
    assert _blas(["-m", "corral"])[0][2:] == [visible, "None"]
    assert _blas(["-m", "corral", "--no-native", "-p", "1"])[0][2:] == [visible, "None"]


def test_cgroup_quota_caps_the_programs_own_blas_calls():
    _two_cpus()
    pytest.importorskip("numpy")
    with quota_group(1) as group:
        enter = enter_group(group)
        visible = str(len(os.sched_getaffinity(0)))
        plain, _ = _blas([], prefix=enter)
        assert plain[2] == visible
        (cpus, source, threads, _), report = _blas(["-m", "corral", "-v"], prefix=enter)
        assert (cpus, threads) == ("1", "1"), report
        assert "quota" in source


# Keeps `before` lists alive, imports `imports` (a pool module enters the patch), then keeps empty lists until
# the collector's first full collection, and prints how many it kept in all by then. One thread: the count
# depends only on the collector's state.
FIRST_FULL_COLLECTION = textwrap.dedent("""\
    import gc, sys
    kept, first = [[] for _ in range(int(sys.argv[1]))], []
    gc.callbacks.append(lambda phase, info: phase == "start" and info["generation"] == 2 and not first
                        and first.append(len(kept)))
    for name in sys.argv[2:]:
        __import__(name)
    while not first:
        kept.append([])
    print(first[0])
""")


def _first_full_collection(tmp_path, before: int, *imports: str) -> tuple[int, int]:
    """(plain python's count, corral's) of FIRST_FULL_COLLECTION."""
    script = tmp_path / "first_full_collection.py"
    script.write_text(FIRST_FULL_COLLECTION)
    args = [str(script), str(before), *imports]
    plain = run(args, timeout=120)
    under = run(["-m", "corral", *args], timeout=120)
    assert plain.returncode == 0 and under.returncode == 0, plain.stderr + under.stderr
    return int(plain.stdout), int(under.stdout)


def test_the_runner_leaves_the_program_no_earlier_full_collection(tmp_path):
    # The runner's own imports (some 10,000 objects) once left the collector's counts where the program's first
    # full collection came after 66,500 objects kept instead of plain python's 87,600 (3.11), and a program
    # keeping many alive ran one full collection more (W8: 10 instead of 9, each of up to 1.1 M objects, about
    # 10% of its run). W8 itself shows it only now and then: threads decide where its last collection falls.
    plain, under = _first_full_collection(tmp_path, 0)
    assert under >= plain, (under, plain)


def test_entering_the_patch_leaves_the_programs_full_collections_where_they_were(tmp_path):
    # Entering the patch moves its objects to the oldest generation with gc.freeze() and gc.unfreeze(), which
    # also zero every generation's count (3.11-3.13). The program's first full collection then started after
    # 132,700 objects kept instead of plain python's 81,300 (3.11): in R3 (dask) it moved out of dask's import
    # into the first compute(), some 20 ms. The counts are given back now.
    plain, under = _first_full_collection(tmp_path, 40_000, "concurrent.futures")
    assert under >= plain, (under, plain)
    if sys.version_info < (3, 14):  # 3.14's incremental collector counts otherwise: not given back there
        assert under <= 1.1 * plain, (under, plain)
