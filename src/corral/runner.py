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

PROG = "python -m corral"

USAGE = f"{PROG} [options] (script.py | -m module | -c code | info) [args ...]"

DESCRIPTION = """\
Run a Python program with one CPU budget for all of its parallelism. While it runs,
multiprocessing.pool.ThreadPool and concurrent.futures.ThreadPoolExecutor are corral's pools
(names imported before the program started included): a pool keeps as many tasks in flight as
its processes/max_workers says, but only about budget-many run at once; tasks that wait (sleep,
sockets, select, locks, events, corral futures, any system call a monitor sees them asleep in) do
not count. BLAS/OpenMP thread counts are set as tasks start (see modes).

The program sees the same sys.argv, __main__, sys.path[0] and exit status as under plain python.
`python -m corral info` shows the budget and the native thread pools (a script named "info": ./info)."""

EPILOG = """\
modes:
  dynamic  each task, as it starts, gets inner (BLAS/OpenMP) threads = max(1, budget // tasks running now)
  static   SMP-like fixed limits: a pool keeps its size, each of its tasks gets
           inner threads = max(1, budget // pool size)

environment:
  CORRAL_CPUS=N   the budget (what -p sets; children inherit it)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, usage=USAGE, description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-p", "--cpus", type=_positive_int, metavar="N",
                        help="CPU budget (same as CORRAL_CPUS=N; exported to child processes)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print to stderr what was patched, the budget and the native libraries' limits")
    parser.add_argument("--no-native", action="store_true", help="do not touch BLAS/OpenMP thread limits")
    parser.add_argument("--mode", choices=("dynamic", "static"), default="dynamic",
                        help="how inner threads are sized (see below; default: dynamic)")
    parser.add_argument("-m", dest="module", metavar="module", help="run a library module as a script")
    parser.add_argument("-c", dest="code", metavar="code", help="run a program passed in as a string")
    parser.add_argument("target", nargs="?", metavar="script.py | info", help="the program to run")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of CPUs, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"the budget must be at least 1 CPU, got {value}")
    return value


# Options that take a value in the next word (the split below must skip it).
_VALUE_OPTIONS = {"-p", "--cpus", "--mode"}


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

    if args.cpus is not None:
        os.environ["CORRAL_CPUS"] = str(args.cpus)  # before the budget is read; children inherit it

    if args.target is not None:
        script = args.target
        if not os.path.exists(script):
            print(f"{PROG}: can't open file {os.path.abspath(script)!r}: "
                  f"[Errno 2] No such file or directory", file=sys.stderr)
            return 2

    from .patch import patch

    patcher = patch(native=not args.no_native, mode=args.mode)
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
    budget = getattr(corral, "budget", None)
    if budget is not None:
        b = budget()
        print(f"corral: budget {b.cpus} CPUs (decided by {getattr(b, 'decided_by', '?')})", file=out)
    for line in describe():
        print(f"corral: patched {line}", file=out)
    if patcher.native:
        rule = ("max(1, budget // tasks running), set as each task starts" if patcher.mode == "dynamic"
                else "max(1, budget // pool size), fixed per pool")
        print(f"corral: native limits ({patcher.mode}): inner threads = {rule}", file=out)
        pools = getattr(corral, "native_pools", None)
        found = pools() if pools is not None else []
        if not found:
            print("corral: no BLAS/OpenMP library loaded yet (limits apply once one is)", file=out)
        for p in found:
            print(f"corral:   {p.get('library')} {p.get('threading_layer', '')} "
                  f"{p.get('num_threads')} threads now  {p.get('path')}", file=out)
    else:
        print("corral: native limits untouched (--no-native)", file=out)
