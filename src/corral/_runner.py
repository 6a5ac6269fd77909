"""`python -m corral [options] script.py [args]`: run a program under corral, as python would run it.

Everything the command line and the environment say is checked before the program starts (a bad value:
one line on stderr, exit 2). The program then runs as python would run it (_as_main.py), with
corral.patch() active for the whole run and the budget applied to its own BLAS/OpenMP calls
(_program_limits.py).
"""

from __future__ import annotations

import gc
import os
import sys
import types

from . import _as_main, _children, _core, _deferred_patch, _program_limits, _share, _thread_limits
from ._cpu_list import format_cpu_list, parse_cpu_list
from ._pool_settings import validate_factor
from ._thread_limits import MAX_BUDGET

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: argparse is imported where the parser is built
    import argparse
    from typing import Callable, NoReturn

PROG = "python -m corral"

USAGE = f"{PROG} [options] (script.py | dir | file.zip | - | -m module | -c code | info | report) [args ...]"

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
  own BLAS calls when the budget is below the CPUs the libraries see (a cgroup CPU quota, -p N),
                 OMP/OPENBLAS/MKL/BLIS/VECLIB/NUMEXPR_NUM_THREADS are set to the budget before
                 the program loads its libraries (see below), so that the program's BLAS calls
                 made outside any pool use at most budget threads too.
  child pythons  Python processes the program starts (multiprocessing.Process with fork, spawn or
                 forkserver, subprocess running python, a Dask LocalCluster's workers) run under
                 corral too, with the same options: the patched pools, the budget, the limits
                 above; each Dask worker gets its own share of the CPUs (--no-children: not).

The program sees the same sys.argv, __main__ (also __mp_main__), sys.path[0], tracebacks and exit
status as under plain python (an uncaught KeyboardInterrupt: atexit handlers and finalization,
then exit by SIGINT).
`python -m corral info` shows the budget and the native thread pools, `python -m corral report` how a
program uses its CPUs, plain and under corral (a script named "info" or "report": ./info)."""

EPILOG = """\
cpus (-p / --cpus):
  N        a budget of N CPUs, 1 to 65536 (same as CORRAL_CPUS=N): the program may run on every CPU it
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
  an upper bound, as the budget (or a worker's share) is: the lower wins, for thread-pool tasks,
  process-pool and joblib workers, and the program's own calls. --force gives workers their share
  even where your value is lower, -v names each variable you set and what it becomes, --no-native
  leaves thread-pool tasks and the program's own calls alone. joblib.cpu_count() and n_jobs=-1
  follow the budget (LOKY_MAX_CPU_COUNT). The whole rule: docs/native.md, "Inner thread counts", in corral's source.

OpenBLAS spinning:
  idle OpenBLAS threads spin ~0.1 s after each call by default, holding a core the budget gave to
  another task; the runner sets OPENBLAS_THREAD_TIMEOUT=22 (~1.5 ms) for the libraries the program
  loads, unless you set it (not in os.environ: the program sees its environment as under python;
  children inherit it; --no-native leaves it alone). docs/native.md, "Spinning".

machine share (--share):
  Every corral program of this user started with the same --share NAME (or CORRAL_SHARE=NAME) draws
  its running permits from one pool of the machine's CPUs, keeping one of its own: four programs side
  by side keep about the share's size busy together, not four budgets. The first member's --share-size (default:
  its budget) is the size. The share is a private file in $XDG_RUNTIME_DIR/corral (else
  /tmp/corral-$UID); a member that dies, even by SIGKILL, gives its permits back at once. Children
  inherit it (CORRAL_SHARE). --share NAME takes NAME when it is not an existing file; --share=NAME
  always does. `python -m corral info` lists the shares and their members.
  Under make -jN (a recipe marked '+'), without --share, the permits beyond the first are make's
  jobserver tokens. Otherwise the program gets a share of its own, tree-PID, sized to its budget, that
  the Python processes it starts join: the program and its children run on one budget together, not
  one each (--no-children: no such share). docs/share.md, in corral's source, has the details.

environment:
  CORRAL_CPUS=N        the budget (what -p N sets; children inherit it; process-pool workers get their share)
  CORRAL_CHILDREN      set by corral for the program: Python processes started with it join the budget
                       (through a .pth file corral installs in site-packages); --no-children removes it
  CORRAL_SHARE=NAME    join the machine share NAME (what --share sets; children inherit it)
  CORRAL_SHARE_SIZE=N  its size when this process creates it (what --share-size sets)

Bad options, a malformed CORRAL_CPUS, CORRAL_SHARE or CORRAL_SHARE_SIZE, and a share directory that
is not private are reported before the program starts (exit 2)."""


def build_parser() -> argparse.ArgumentParser:
    import argparse  # only where corral's options are given (see plain_target_args)

    class _Parser(argparse.ArgumentParser):
        def error(self, message):
            fail(message)

    parser = _Parser(
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
                             "pools), the process-pool settings, the native libraries' limits, and each "
                             "thread-limit variable set, kept or lowered for the program's own calls")
    parser.add_argument("--share", nargs="?", const=_share.DEFAULT_NAME, metavar="NAME",
                        help="draw this program's running permits (one of its own besides) from the machine share NAME "
                             f"(default {_share.DEFAULT_NAME!r}), with every corral program that joins it "
                             "(CORRAL_SHARE=NAME, exported to child processes); see below")
    parser.add_argument("--share-size", type=share_size_option, metavar="N",
                        help="the share's size in permits when this program creates it (default: its "
                             "budget); CORRAL_SHARE_SIZE=N")
    parser.add_argument("--no-native", action="store_true",
                        help="do not touch BLAS/OpenMP thread limits: neither in thread-pool tasks nor "
                             "for the program's own calls")
    parser.add_argument("--no-children", action="store_true",
                        help="leave child Python processes alone: they run as under plain python, without "
                             "corral's pools, limits or Dask worker shares (process-pool workers still get "
                             "their share)")
    parser.add_argument("--mode", choices=("dynamic", "static"), default="dynamic",
                        help="how thread-pool tasks' inner threads are sized (see below; default: dynamic)")
    parser.add_argument("-m", dest="module", metavar="module", help="run a library module as a script")
    parser.add_argument("-c", dest="code", metavar="code", help="run a program passed in as a string")
    parser.add_argument("target", nargs="?", metavar="script.py | dir | file.zip | - | info | report",
                        help="the program to run, as python runs it (-: read from stdin; a directory or "
                             "zip: its __main__.py)")
    return parser


# What build_parser() gives `python -m corral TARGET`, the usual command, built without it: argparse and what
# it imports as a parser is built (gettext, locale, shutil) are about 5 ms of every start, and a program that
# never imports them should not find them loaded. tests/test_runner.py checks that the two agree.
_DEFAULTS = {"cpus": None, "factor": 1.0, "force": False, "verbose": False, "share": None, "share_size": None,
             "no_native": False, "no_children": False, "mode": "dynamic", "module": None, "code": None}


def plain_target_args(own: list[str]) -> types.SimpleNamespace | None:
    """The options of `own` when it is a target alone (no option of corral's, not `-`), else None: then
    build_parser() parses them."""
    if len(own) != 1 or own[0].startswith("-"):
        return None
    return types.SimpleNamespace(**_DEFAULTS, target=own[0])


def exit_with(status: int, message: str) -> NoReturn:
    """What argparse's exit does: the message to stderr, then SystemExit(status)."""
    sys.stderr.write(message)
    sys.exit(status)


def fail(message: str) -> NoReturn:
    """A command-line error: one line, as `corral info` reports its errors (argparse would print the usage
    first), exit 2."""
    exit_with(2, f"{PROG}: {message} (see {PROG} --help)\n")


def cpus_option(text: str) -> int | frozenset[int]:
    """-p/--cpus: a count N (the budget), or a CPU list (a value with '-' or ',')."""
    import argparse  # called by the parser only: imported already

    if ("-" in text or "," in text) and not (text.startswith("-") and text[1:].isdigit()):  # -1: a count
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
    if value > MAX_BUDGET:  # as CORRAL_CPUS (C++ parse_corral_cpus)
        raise argparse.ArgumentTypeError(f"the budget must be at most {MAX_BUDGET} CPUs, got {value}")
    return value


def factor_option(text: str) -> float:
    import argparse  # called by the parser only: imported already

    try:
        value = float(text)
    except ValueError:  # not a number
        raise argparse.ArgumentTypeError(f"the oversubscription factor must be a number >= 1, got {text!r}") from None
    try:
        return validate_factor(value)
    except ValueError:  # below 1, infinite or nan
        raise argparse.ArgumentTypeError(
            f"the oversubscription factor must be a finite number >= 1, got {text!r}") from None


def share_size_option(text: str) -> int:
    import argparse  # called by the parser only: imported already

    try:
        return _share.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("corral: ")) from None


def apply_share(args: argparse.Namespace) -> None:
    """Puts --share/--share-size into the environment (children inherit them) and checks what the
    environment says: a bad name or size is a command-line error (exit 2)."""
    if args.share_size is not None and args.share is None:
        fail("--share-size needs --share")
    if args.share is not None:
        os.environ[_share.ENV_NAME] = args.share
        if args.share_size is not None:
            os.environ[_share.ENV_SIZE] = str(args.share_size)
    where = "--share" if args.share is not None else _share.ENV_NAME
    try:
        name = os.environ.get(_share.ENV_NAME, "")
        if name or args.share is not None:  # an empty CORRAL_SHARE is unset; an empty --share= is refused
            _share.check_name(name)
        where = "--share-size" if args.share_size is not None else _share.ENV_SIZE
        if os.environ.get(_share.ENV_SIZE, ""):  # checked even without a share: --help promises it
            _share.parse_size(os.environ[_share.ENV_SIZE])
    except ValueError as exc:
        exit_with(2, f"{PROG}: {where}: {str(exc).removeprefix('corral: ')}\n")


def apply_cpus(cpus: int | frozenset[int] | None) -> None:
    """Puts -p/--cpus into effect, before anything reads the budget: a count becomes CORRAL_CPUS
    (children inherit it); a list becomes this process's affinity (children inherit that)."""
    if cpus is None:
        return
    if isinstance(cpus, int):
        os.environ["CORRAL_CPUS"] = str(cpus)
    else:
        os.sched_setaffinity(0, cpus)


# Options that take a value in the next word (the split below must skip it).
_VALUE_OPTIONS = {"-p", "--cpus", "--mode", "-f", "--oversubscription-factor", "--share-size"}


def _share_name_follows(argv: list[str], i: int) -> bool:
    """Whether the word after a bare --share at argv[i] is its NAME: it is not an option nor an existing
    file, and a program follows it (so `--share script.py` runs script.py in the default share)."""
    if i + 2 >= len(argv):
        return False
    word = argv[i + 1]
    return not word.startswith("-") and not os.path.exists(word)


def split_at_program(argv: list[str], value_options, rewrite=None) -> tuple[list[str], list[str]]:
    """(the options and the target, the program's arguments), split as python splits its own command
    line: everything after the script, `-m module` or `-c code` belongs to the program, options
    included. `value_options` take the next word; `rewrite(argv, i)` may rewrite argv[i] in place first."""
    argv = list(argv)
    i = 0
    while i < len(argv):
        if rewrite is not None:
            rewrite(argv, i)
        word = argv[i]
        if word in ("--", "-m", "-c"):
            return argv[: i + 2], argv[i + 2:]
        if word.startswith(("-m", "-c")) and not word.startswith("--"):
            return argv[: i + 1], argv[i + 1:]  # -mmodule, -c'code'
        if word in value_options:
            i += 2
            continue
        if not word.startswith("-") or word == "-":
            return argv[: i + 1], argv[i + 1:]
        i += 1
    return argv, []


def _bare_share(argv: list[str], i: int) -> None:
    # A bare --share becomes --share=NAME (its name, or the default), so that argparse never takes the
    # script for the share's name.
    if argv[i] == "--share":
        if _share_name_follows(argv, i):
            argv[i: i + 2] = [f"--share={argv[i + 1]}"]
        else:
            argv[i] = f"--share={_share.DEFAULT_NAME}"


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(corral's options and the target, the program's arguments): split_at_program with the runner's
    options."""
    return split_at_program(argv, _VALUE_OPTIONS, _bare_share)


def check_one_program(args: argparse.Namespace, error: Callable[[str], NoReturn] = fail) -> None:
    """Exactly one of a script, -m module and -c code was given (else error(message): a command-line
    error, exit 2; `corral report` passes its parser's)."""
    chosen = [x for x in (args.module, args.code, args.target) if x is not None]
    if not chosen:
        error("nothing to run: give a script, -m module or -c code")
    if len(chosen) > 1:
        error("give one of: a script, -m module, -c code")


def main(argv: list[str]) -> int:
    own, program_args = split_argv(argv)
    args = plain_target_args(own)
    if args is None:
        args = build_parser().parse_args(own)
        check_one_program(args)

    try:  # before anything is set: a script that does not compile goes to python as it came
        program = _as_main.prepare(script=args.target, module=args.module, code=args.code, args=program_args)
    except _as_main.CannotRun as exc:
        exit_with(exc.status, f"{exc}\n")  # python's own words and status
    except _as_main.PythonReports:
        hand_to_python(args.target, program_args)

    apply_cpus(args.cpus)  # before the budget is read; children inherit it
    apply_share(args)
    inputs = _children.budget_inputs()  # read before the budget: recorded with it for children
    try:
        budget = _core.budget().cpus  # a malformed CORRAL_CPUS: now, not when a pool first reads it
        source = _share.source()  # joins the share (or make's jobserver) now: one we may not open is exit 2
    except (ValueError, OSError) as exc:
        exit_with(2, f"{PROG}: {getattr(exc, 'strerror', None) or exc}\n")
    notes = [_share.source_note()]  # why make's jobserver was not used (joining the tree clears it)
    if source is None and not args.no_children:
        # Children inherit the budget; without a share of their own each would have all of it. A share
        # private to the program's tree makes them draw from one budget (docs/share.md, "The program's tree").
        try:
            _share.join_tree(budget)
        except OSError as exc:
            notes.append(f"no share for the program's children ({getattr(exc, 'strerror', None) or exc})")
    _children.end_in_child()  # this runner is itself a child of a corral program: its options now
    settings = _children.Settings(native=not args.no_native, mode=args.mode, factor=args.factor, force=args.force)
    if args.no_children:
        _children.disable()
    else:
        _children.enable(settings, budget, inputs)
    limits = []
    if not args.no_native:  # before the program loads its libraries
        limits = _program_limits.decide(budget, len(os.sched_getaffinity(0)))
        _program_limits.apply(budget, limits)
        _program_limits.limit_spinning()

    # For the whole program (never left: pools may be built until exit), entered at its first import of a
    # pool module; at once under -v, which lists what it patched.
    patcher = _deferred_patch.DeferredPatch(**settings.patch_settings())
    patcher.start(now=args.verbose)
    if args.verbose and patcher.entered is not None:
        _report(patcher.entered, limits, "; ".join(x for x in notes if x))
    elif args.verbose:  # its import failed (a module of the program shadowing one it needs): retried later
        print("corral: pools not patched yet: their modules could not be imported now", file=sys.stderr)
    if gc.isenabled():
        # The program starts from no pending objects, and the patch's imports add none (see there).
        gc.collect()
        patcher.keep_collections_on_schedule()
    _as_main.run(program)
    return 0


def hand_to_python(script: str, program_args: list[str]) -> NoReturn:
    """Replaces this process by plain python on the same script, arguments and interpreter options."""
    import subprocess  # only here: the runner's start imports as little as it can

    flags = subprocess._args_from_interpreter_flags()  # the stdlib's, for multiprocessing's children
    if sys.flags.inspect and "-i" not in flags:  # not among them: python -i gives the prompt after the error
        flags.append("-i")
    argv = [sys.executable, *flags, script, *program_args]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, argv)
    except OSError as exc:
        exit_with(2, f"{PROG}: cannot run {sys.executable}: {exc.strerror}\n")


def _report(patcher, limits, note: str) -> None:
    out = sys.stderr
    print(f"corral: CPUs {format_cpu_list(os.sched_getaffinity(0))} (this process's affinity)", file=out)
    b = _core.budget()
    extra = "; above the hardware: emulating a bigger machine" if b.exceeds_hardware else ""  # as `info` says
    print(f"corral: budget {b.cpus} CPUs (decided by {b.decided_by}{extra})", file=out)
    source = _share.source()
    if source is not None and _share.is_tree(os.environ.get(_share.ENV_NAME)):
        print(f"corral: joined {source}, private to this program and the processes it starts: "
              f"together they run on its permits, each process one of its own besides"
              f"{f' ({note})' if note else ''}", file=out)
    elif source is not None:
        print(f"corral: joined {source}: running permits drawn from it, one of this program's own besides",
              file=out)
    else:
        print(f"corral: no machine share: the budget is this program's own{f' ({note})' if note else ''}",
              file=out)
    for line in sys.modules[_deferred_patch.PATCH_MODULE].describe():  # entered by now (see main)
        print(f"corral: patched {line}", file=out)
    widened = "disjoint while workers <= CPUs" if patcher.factor == 1 else f"widened by factor {patcher.factor:g}"
    rule = ("its share; thread-limit variables you set are overridden (--force)" if patcher.force
            else "the lower of its share and a value you set")
    print(f"corral: process pools: each worker gets its own CPUs ({widened}) and thread limits = {rule}",
          file=out)
    for line in _thread_limits.describe_user_limits(b.cpus, force=patcher.force):
        print(f"corral: process pools: {line}", file=out)
    if _children.CHILDREN_VAR in os.environ:
        print(f"corral: child Python processes join the budget ({_children.CHILDREN_VAR}="
              f"{os.environ[_children.CHILDREN_VAR]}); Dask workers get their own share", file=out)
    else:
        print("corral: child Python processes left alone (--no-children)", file=out)
    if patcher.native:
        rule = ("max(1, budget // tasks running), set as each task starts" if patcher.mode == "dynamic"
                else "max(1, budget // pool size), fixed per pool")
        print(f"corral: native limits ({patcher.mode}): inner threads = {rule}", file=out)
        found = _core.native_pools()
        if not found:
            print("corral: no BLAS/OpenMP library loaded yet (limits apply once one is)", file=out)
        for p in found:
            print(f"corral:   {p.get('library')} {p.get('threading_layer', '')} "
                  f"{p.get('num_threads')} threads now  {p.get('path')}", file=out)
        if not limits:
            print(f"corral: the program's own calls: thread-limit variables left alone (the budget, {b.cpus}, "
                  f"is not below the {len(os.sched_getaffinity(0))} CPUs the libraries see)", file=out)
        for d in limits:
            now = f"{d.var}={d.new}" if d.new is not None else f"{d.var}={d.value}"
            was = f" (was {d.value})" if d.new is not None and d.value is not None else ""
            print(f"corral: the program's own calls: {now}{was}: {d.why}", file=out)
    else:
        print("corral: native limits untouched (--no-native)", file=out)
