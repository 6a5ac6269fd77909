"""`python -m corral [options] script.py [args]`: run a program under corral, as python would run it.

The program sees what plain python would give it: sys.argv, a `__main__` module, sys.path[0], its exit
status (sys.exit codes; an uncaught exception prints python's traceback and exits 1; an uncaught
KeyboardInterrupt ends the process by SIGINT). corral.patch() stays active for the whole run.
"""

from __future__ import annotations

import argparse
import builtins
import importlib.machinery
import io
import os
import runpy
import signal
import sys
import types
import zipfile

from .worker_share import validate_factor

PROG = "python -m corral"

USAGE = f"{PROG} [options] (script.py | -m module | -c code | info) [args ...]"

DESCRIPTION = """\
Run a Python program with one CPU budget for all of its parallelism. While it runs, the stdlib's
pools are corral's (names imported before the program started included):

  thread pools   multiprocessing.pool.ThreadPool (multiprocessing.dummy.Pool) and
                 concurrent.futures.ThreadPoolExecutor keep as many tasks in flight as their
                 processes/max_workers says, but only about budget-many run at once; tasks that
                 wait (sleep, sockets, select, locks, events, corral futures, any system call a
                 monitor sees them asleep in) do not count. BLAS/OpenMP thread counts are set as
                 tasks start (see modes).
  process pools  multiprocessing.Pool, multiprocessing.pool.Pool, ctx.Pool(...) and
                 concurrent.futures.ProcessPoolExecutor give each worker process its own share of
                 the budget: CPUs (affinity; disjoint while workers <= CPUs, widened by -f), and
                 OMP/OPENBLAS/MKL/BLIS/VECLIB/NUMEXPR/NUMBA_NUM_THREADS, PYTHON_CPU_COUNT and
                 CORRAL_CPUS set to the share's size. A worker that dies breaks the pool with an
                 error instead of a hang. With joblib installed, its loky (and multiprocessing)
                 workers get the same thread-limit variables, budget // n_jobs each (widened by
                 -f; no CPU set: loky starts and reuses its workers itself).

The program sees the same sys.argv, __main__, sys.path[0] and exit status as under plain python.
`python -m corral info` shows the budget and the native thread pools (a script named "info": ./info)."""

EPILOG = """\
cpus (-p / --cpus):
  N        a budget of N CPUs (same as CORRAL_CPUS=N): the program may run on every CPU it
           could before, but keeps about N busy
  LIST     run the whole program (and its children) on these CPUs only, e.g. 0-3,8: the
           runner's affinity is set before anything starts, so the budget is their number
           (or less, under a cgroup CPU quota or CORRAL_CPUS)
           A value with '-' or ',' is a LIST; one CPU: --cpus 3-3 (--cpus 3 is a budget of 3).
           CPUs this process may not use are an error.

modes (thread pools; process pools always use fixed per-worker shares):
  dynamic  each task, as it starts, gets inner (BLAS/OpenMP) threads = max(1, budget // tasks running now)
  static   SMP-like fixed limits: a pool keeps its size, each of its tasks gets
           inner threads = max(1, budget // pool size)

thread-limit variables you set (OMP_NUM_THREADS=4 python -m corral ...):
  an upper bound: process-pool and joblib workers get the lower of your value and their share
  (OMP_NUM_THREADS=16 on a 1-CPU share: 1; OMP_NUM_THREADS=1 on a 2-CPU share: 1), and so do the
  BLAS/OpenMP libraries already loaded in them; a value that is not a whole number is passed on
  as you set it. --force gives every worker its share even where your value is lower. -v names
  each variable you set and what workers get for it. LOKY_MAX_CPU_COUNT is set to the budget
  (unless yours is lower), so joblib.cpu_count() and n_jobs=-1 follow it.
  Thread-pool tasks get corral's limits either way (--no-native leaves those alone).

environment:
  CORRAL_CPUS=N   the budget (what -p N sets; children inherit it; process-pool workers get their share)
  OPENBLAS_THREAD_TIMEOUT=4 is set unless you set it (or --no-native): idle OpenBLAS threads then
                  sleep at once instead of spinning ~0.1 s on cores given to other tasks"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, usage=USAGE, description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-p", "--cpus", type=cpus_option, metavar="N|LIST",
                        help="a budget of N CPUs (CORRAL_CPUS=N, exported to child processes), or a CPU "
                             "LIST such as 0-3,8 (or 3-3 for one CPU) to run the whole program on; see below")
    parser.add_argument("-f", "--oversubscription-factor", dest="factor", type=factor_option, default=1.0,
                        metavar="F",
                        help="widen each process-pool worker's CPU set, and its thread limits, to "
                             "ceil(share * F) CPUs; joblib workers' thread limits likewise "
                             "(a number >= 1; default 1: disjoint sets)")
    parser.add_argument("--force", action="store_true",
                        help="process-pool and joblib workers get their share in every thread-limit "
                             "variable even where yours is lower (default: the lower of yours and the share)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print to stderr the CPUs and budget, what was patched (thread and process "
                             "pools), the process-pool settings and the native libraries' limits")
    parser.add_argument("--no-native", action="store_true",
                        help="do not touch BLAS/OpenMP thread limits in thread-pool tasks")
    parser.add_argument("--mode", choices=("dynamic", "static"), default="dynamic",
                        help="how thread-pool tasks' inner threads are sized (see below; default: dynamic)")
    parser.add_argument("-m", dest="module", metavar="module", help="run a library module as a script")
    parser.add_argument("-c", dest="code", metavar="code", help="run a program passed in as a string")
    parser.add_argument("target", nargs="?", metavar="script.py | info", help="the program to run")
    return parser


def parse_cpu_list(text: str) -> frozenset[int]:
    """The CPUs of a kernel cpu list ("0-3,8"), as corral's C++ cpu_set::parse reads it: items
    separated by commas, each an id or an inclusive range, blanks around items allowed. Anything
    else (an empty item, a reversed range, a negative or huge id, stray characters) is a ValueError."""
    cpus: set[int] = set()
    for item in text.split(","):
        first, dash, last = item.partition("-")
        low = _cpu_id(first, text)
        high = _cpu_id(last, text) if dash else low
        if high < low:
            raise ValueError(f"reversed range {item.strip()!r} in CPU list {text!r}")
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


_MAX_CPU_ID = 65535  # cpu_set::max_cpu_id: garbage like 0-4000000000 is an error, not a huge set


def _cpu_id(word: str, text: str) -> int:
    word = word.strip()
    if not word:
        raise ValueError(f"empty item in CPU list {text!r}")
    if not word.isdigit() or not word.isascii():
        raise ValueError(f"{word!r} is not a CPU id (in CPU list {text!r})")
    value = int(word)
    if value > _MAX_CPU_ID:
        raise ValueError(f"CPU id {value} is out of range (in CPU list {text!r})")
    return value


def format_cpu_list(cpus) -> str:
    """The shortest cpu list: {0, 1, 2, 3, 8} -> "0-3,8"."""
    parts, ids = [], sorted(cpus)
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)


def cpus_option(text: str) -> int | frozenset[int]:
    """-p/--cpus: a count N (the budget), or a CPU list (a value with '-' or ',')."""
    if "-" in text or "," in text:
        try:
            cpus = parse_cpu_list(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        allowed = os.sched_getaffinity(0)
        refused = cpus - allowed
        if refused:
            raise argparse.ArgumentTypeError(
                f"CPU{'s' if len(refused) > 1 else ''} {format_cpu_list(refused)} "
                f"{'are' if len(refused) > 1 else 'is'} not allowed to this process "
                f"(allowed: {format_cpu_list(allowed)})")
        return cpus
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of CPUs (N) or a CPU list such as 0-3,8, got {text!r}") from None
    if value < 1:
        hint = f"; for CPU {value} alone write {value}-{value}" if value == 0 else ""
        raise argparse.ArgumentTypeError(f"the budget must be at least 1 CPU, got {value}{hint}")
    return value


def factor_option(text: str) -> float:
    try:
        return validate_factor(text)
    except TypeError:  # not a number
        raise argparse.ArgumentTypeError(f"the oversubscription factor must be a number >= 1, got {text!r}") from None
    except ValueError:  # below 1, infinite or nan
        raise argparse.ArgumentTypeError(
            f"the oversubscription factor must be a finite number >= 1, got {text!r}") from None


def apply_cpus(cpus: int | frozenset[int] | None) -> None:
    """Puts -p/--cpus into effect, before anything reads the budget: a count becomes CORRAL_CPUS
    (children inherit it); a list becomes this process's affinity (children inherit that)."""
    if cpus is None:
        return
    if isinstance(cpus, int):
        os.environ["CORRAL_CPUS"] = str(cpus)
    else:
        os.sched_setaffinity(0, cpus)


def quiet_blas_spinning() -> None:
    """OpenBLAS's worker threads spin for 2**28 cycles (~0.1 s) after each call before they sleep.
    When corral lowers a task's BLAS threads (other tasks took the cores), those spinners keep
    burning cores the budget gave to other tasks (W1 measured 10-20% slower for it). The minimum
    timeout puts them to sleep at once; a value the user set wins. Read when OpenBLAS loads."""
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


# Options that take a value in the next word (the split below must skip it).
_VALUE_OPTIONS = {"-p", "--cpus", "--mode", "-f", "--oversubscription-factor"}


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(corral's options and the target, the program's arguments).

    Like python's own command line: everything after the script, `-m module` or `-c code` belongs to
    the program, options included.
    """
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            return argv[: i + 2], argv[i + 2:]
        if word in ("-m", "-c"):
            return argv[: i + 2], argv[i + 2:]
        if word.startswith(("-m", "-c")) and not word.startswith("--"):
            return argv[: i + 1], argv[i + 1:]  # -mmodule, -c'code'
        if word in _VALUE_OPTIONS:
            i += 2
            continue
        if not word.startswith("-") or word == "-":
            return argv[: i + 1], argv[i + 1:]
        i += 1
    return argv, []


def main(argv: list[str]) -> int:
    own, program_args = split_argv(argv)
    parser = build_parser()
    args = parser.parse_args(own)
    chosen = [x for x in (args.module, args.code, args.target) if x is not None]
    if not chosen:
        parser.error("nothing to run: give a script, -m module or -c code")
    if len(chosen) > 1:
        parser.error("give one of: a script, -m module, -c code")

    apply_cpus(args.cpus)  # before the budget is read; children inherit it
    if not args.no_native:
        quiet_blas_spinning()  # before the program loads numpy

    if args.target is not None:
        script = args.target
        if not os.path.exists(script):
            print(f"{PROG}: can't open file {os.path.abspath(script)!r}: "
                  f"[Errno 2] No such file or directory", file=sys.stderr)
            return 2

    from .patch import patch

    patcher = patch(native=not args.no_native, mode=args.mode, factor=args.factor, force=args.force)
    patcher.__enter__()  # for the whole program: never left, pools may be built until exit
    if args.verbose:
        _report(patcher)

    if args.code is not None:
        sys.argv = ["-c", *program_args]
        sys.path[0] = ""
        return _run(lambda: _run_code(args.code), skip_files=())
    if args.module is not None:
        sys.argv = [args.module, *program_args]  # run_module puts the module's file in argv[0]
        sys.path[0] = os.getcwd()
        problem = _module_lookup_problem(args.module)
        if problem:
            print(f"{PROG}: {problem}", file=sys.stderr)
            return 1
        return _run(lambda: runpy.run_module(args.module, run_name="__main__", alter_sys=True),
                    skip_files=(runpy.__file__,))
    sys.argv = [script, *program_args]
    sys.path[0] = os.path.dirname(os.path.realpath(script))
    return _run(lambda: _run_script(script), skip_files=(runpy.__file__,))


def _run_code(code: str) -> None:
    _exec_as_main(compile(code, "<string>", "exec"), file=None)


def _run_script(path: str) -> None:
    if os.path.isdir(path) or not os.path.isfile(path) or zipfile.is_zipfile(path):
        # A directory or zip with __main__.py: runpy knows those (argv[0] becomes the path as given).
        runpy.run_path(path, run_name="__main__")
        return
    absolute = os.path.abspath(path)
    with io.open_code(absolute) as f:
        source = f.read()
    _exec_as_main(compile(source, absolute, "exec", dont_inherit=True), file=absolute)


def _exec_as_main(code, file: str | None) -> None:
    """Runs `code` in a fresh __main__ module that stays sys.modules["__main__"] until exit, as python's
    own does (atexit handlers, threads and pickling after the program's last line still find it)."""
    main_module = types.ModuleType("__main__")
    namespace = main_module.__dict__
    namespace["__builtins__"] = builtins
    namespace["__annotations__"] = {}
    if file is not None:
        namespace["__file__"] = file
        namespace["__cached__"] = None
        namespace["__loader__"] = importlib.machinery.SourceFileLoader("__main__", file)
    else:
        namespace["__loader__"] = importlib.machinery.BuiltinImporter
    sys.modules["__main__"] = main_module
    exec(code, namespace)


def _module_lookup_problem(name: str) -> str | None:
    """Why `-m name` cannot run (python's message: no such module, a package without __main__), or None.

    Looked up before running so that an ImportError raised by the program itself is not taken for it.
    """
    lookup_error = getattr(runpy, "_Error", None)
    details = getattr(runpy, "_get_module_details", None)
    if lookup_error is None or details is None:  # runpy's internals changed: a coarser check
        import importlib.util

        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError) as exc:
            return str(exc)
        return None if found else f"No module named {name}"
    try:
        details(name, lookup_error)
    except lookup_error as exc:
        return str(exc)
    return None


def _run(run, skip_files) -> int:
    """Runs the program; SystemExit passes through untouched (python's own handling then applies)."""
    try:
        run()
    except SystemExit:
        raise
    except KeyboardInterrupt as exc:
        _print_uncaught(exc, skip_files)
        # As python does: die by SIGINT so that the parent sees an interrupted child.
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 130
    except BaseException as exc:
        _print_uncaught(exc, skip_files)
        return 1
    return 0


def _print_uncaught(exc: BaseException, skip_files) -> None:
    """Prints the traceback as python would: without corral's and runpy's frames."""
    own = {os.path.abspath(__file__), *(os.path.abspath(f) for f in skip_files)}
    tb = exc.__traceback__
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) in own:
        tb = tb.tb_next
    exc.__traceback__ = tb  # the default hook prints the exception's own traceback, not the argument
    sys.excepthook(type(exc), exc, tb)


def _report(patcher) -> None:
    import corral
    from .patch import describe

    out = sys.stderr
    print(f"corral: CPUs {format_cpu_list(os.sched_getaffinity(0))} (this process's affinity)", file=out)
    b = corral.budget()
    print(f"corral: budget {b.cpus} CPUs (decided by {b.decided_by})", file=out)
    for line in describe():
        print(f"corral: patched {line}", file=out)
    widened = "disjoint while workers <= CPUs" if patcher.factor == 1 else f"widened by factor {patcher.factor:g}"
    rule = ("its share; thread-limit variables you set are overridden (--force)" if patcher.force
            else "the lower of its share and a value you set")
    print(f"corral: process pools: each worker gets its own CPUs ({widened}) and thread limits = {rule}",
          file=out)
    from .thread_limits import describe_user_limits

    for line in describe_user_limits(b.cpus, force=patcher.force):
        print(f"corral: process pools: {line}", file=out)
    if patcher.native:
        rule = ("max(1, budget // tasks running), set as each task starts" if patcher.mode == "dynamic"
                else "max(1, budget // pool size), fixed per pool")
        print(f"corral: native limits ({patcher.mode}): inner threads = {rule}", file=out)
        found = corral.native_pools()
        if not found:
            print("corral: no BLAS/OpenMP library loaded yet (limits apply once one is)", file=out)
        for p in found:
            print(f"corral:   {p.get('library')} {p.get('threading_layer', '')} "
                  f"{p.get('num_threads')} threads now  {p.get('path')}", file=out)
    else:
        print("corral: native limits untouched (--no-native)", file=out)
