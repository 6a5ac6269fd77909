"""Runs a program as python's own main would: a script, `-` (stdin), a directory or zip with
__main__.py, `-m module` or `-c code`.

What plain python gives a program, it gets here too:
- a fresh `__main__` module that stays sys.modules["__main__"] until exit, and is also
  sys.modules["__mp_main__"] (multiprocessing aliases the two when it is imported, which corral
  did before the program started), so objects of classes defined in it cross spawn and
  forkserver process boundaries both ways;
- sys.argv, sys.path[0], __file__, __loader__, __spec__ as python sets them;
- an uncaught exception leaves through the interpreter's own main (Modules/main.c), which prints
  it, runs atexit handlers and finalization, and exits 1, or, for KeyboardInterrupt, ends the
  process by SIGINT after finalization. Only the traceback's leading frames of corral's own
  code are dropped, so that it reads as plain python's.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import importlib.util
import io
import marshal
import os
import sys
import types
from collections.abc import Callable

from . import _compat_main

_OWN_DIR = os.path.dirname(os.path.abspath(__file__))


class CannotRun(Exception):
    """The program cannot start; python's message and exit status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class PythonReports(Exception):
    """The script does not compile: nothing of it has run, so python itself, run in this process's
    place on the same arguments, reports it in its own words (its file tokenizer's messages for a
    bad encoding or a null byte are not compile()'s)."""


def prepare(*, script: str | None = None, module: str | None = None, code: str | None = None,
            args: list[str]) -> Callable[[], None]:
    """What runs the program (called once, before the runner's set-up changes anything). Problems
    python reports before running anything raise here: CannotRun for a script it cannot open,
    PythonReports for one that does not compile."""
    if code is not None:
        return lambda: _run_code(code, args)
    if module is not None:
        return lambda: _run_module(module, args)
    if script == "-":
        return lambda: _run_stdin(args)
    # As python: relative to the working directory, not normalized ('./x.py' stays in the name).
    filename = script if os.path.isabs(script) else os.path.join(os.getcwd(), script)
    # A directory or zip is run as its __main__ module when a path hook takes it (as python does).
    if _path_importer(filename) is not None:
        return lambda: _run_path_entry(script, filename, args)
    try:
        with io.open_code(filename) as f:
            source = f.read()
    except OSError as exc:
        # sys.orig_argv[0]: what python calls itself in this message (its program name).
        raise CannotRun(f"{sys.orig_argv[0]}: can't open file {filename!r}: [Errno {exc.errno}] {exc.strerror}",
                        2) from None
    code = None
    if source[:4] != importlib.util.MAGIC_NUMBER:
        try:
            code = compile(source, filename, "exec", dont_inherit=True)
        except (SyntaxError, ValueError):  # ValueError: a null byte, on 3.11
            raise PythonReports from None
    return lambda: _run_file(script, filename, source, code, args)


def _path_importer(path: str):
    """The finder a path hook gives for `path`, or None, as python looks for one before it runs a script
    (PyImport_GetImporter: sys.path_importer_cache holds the answer afterwards, None for a file). Not
    pkgutil.get_importer(), which caches no None, and whose pkgutil imports typing: a program that imports
    neither finds them absent, as under plain python."""
    cache = sys.path_importer_cache
    if path in cache:
        return cache[path]
    cache[path] = None
    for hook in sys.path_hooks:
        try:
            importer = hook(path)
        except ImportError:
            continue
        cache[path] = importer
        return importer
    return None


def run(program: Callable[[], None]) -> None:
    """Runs the program; an uncaught exception propagates to the interpreter's main (see above)."""
    try:
        program()
    except SystemExit:
        raise  # the interpreter's own handling: status, message, no traceback
    except BaseException as exc:
        _hand_over(exc)
        raise


# --- the forms of program ------------------------------------------------------------------------

def _fresh_main() -> dict:
    """Installs and returns the namespace of a new __main__ as the interpreter makes it."""
    previous = sys.modules["__main__"]
    main = types.ModuleType("__main__")
    namespace = main.__dict__
    namespace["__builtins__"] = builtins
    namespace["__loader__"] = importlib.machinery.BuiltinImporter
    if "__annotations__" in vars(previous):  # the interpreter's __main__ has it on this version
        namespace["__annotations__"] = {}
    sys.modules["__main__"] = main
    if "__mp_main__" in sys.modules:  # as multiprocessing would have aliased it
        sys.modules["__mp_main__"] = main
    return namespace


def _set_path0(entry: str) -> None:
    if not sys.flags.safe_path:  # -P / PYTHONSAFEPATH: python adds no sys.path[0], nor do we
        sys.path[0] = entry


def _run_code(code: str, args: list[str]) -> None:
    sys.argv = ["-c", *args]
    _set_path0("")
    if sys.version_info >= (3, 14):  # python 3.14 dedents -c code
        import textwrap

        code = textwrap.dedent(code)
    namespace = _fresh_main()
    compiled = compile(code, "<string>", "exec")
    if _compat_main.register_source is not None:  # 3.13+: tracebacks show -c lines, as python's main has them
        _compat_main.register_source(compiled, code, "<string>")
    exec(compiled, namespace)


def _run_stdin(args: list[str]) -> None:
    sys.argv = ["-", *args]
    _set_path0("")
    source = sys.stdin.buffer.read()
    namespace = _fresh_main()
    _exec_file(compile(source, "<stdin>", "exec", dont_inherit=True), namespace, "<stdin>")


def _run_file(script: str, filename: str, source: bytes, code, args: list[str]) -> None:
    """`code`: the source compiled (prepare), or None for a .pyc."""
    sys.argv = [script, *args]
    _set_path0(os.path.dirname(os.path.realpath(filename)))
    namespace = _fresh_main()
    if code is None:  # a .pyc, as python runs one
        namespace["__loader__"] = importlib.machinery.SourcelessFileLoader("__main__", filename)
        code = marshal.loads(memoryview(source)[16:])
    else:
        namespace["__loader__"] = importlib.machinery.SourceFileLoader("__main__", filename)
    _exec_file(code, namespace, filename)


def _exec_file(code, namespace: dict, filename: str) -> None:
    # __file__ and __cached__ only while the program runs: python removes them afterwards
    # (pythonrun.c, _PyRun_SimpleFileObject), atexit handlers do not see them.
    namespace["__file__"] = filename
    namespace["__cached__"] = None
    try:
        exec(code, namespace)
    finally:
        namespace.pop("__file__", None)
        namespace.pop("__cached__", None)


def _run_path_entry(script: str, filename: str, args: list[str]) -> None:
    sys.argv = [script, *args]
    if sys.flags.safe_path:  # -P: python still adds the entry itself, in front
        sys.path.insert(0, filename)
    else:
        sys.path[0] = filename
    _fresh_main()
    _run_module_as_main("__main__", alter_argv=False)


def _run_module(name: str, args: list[str]) -> None:
    sys.argv = ["-m", *args]  # python's argv[0] while it looks the module up
    _set_path0(os.getcwd())
    _fresh_main()
    _run_module_as_main(name, alter_argv=True)


def _run_module_as_main(name: str, alter_argv: bool) -> None:
    # What python's own main calls for -m and for directories and zips (a stdlib internal: see _compat_main).
    _compat_main.run_module_as_main(name, alter_argv=alter_argv)


# --- uncaught exceptions -------------------------------------------------------------------------

def _hand_over(exc: BaseException) -> None:
    """Prepares `exc` to leave through the interpreter's main: it will print it with whatever
    sys.excepthook is then; the traceback it would pass starts with corral's and runpy's frames
    that ran this program (and the frames of `python -m corral` itself), which the plain python
    traceback does not have. A one-shot hook puts the program's own traceback back first."""
    tb = exc.__traceback__
    while tb is not None and os.path.dirname(os.path.abspath(tb.tb_frame.f_code.co_filename)) == _OWN_DIR:
        tb = tb.tb_next
    program_hook = sys.excepthook

    def once(exc_type, value, traceback):
        sys.excepthook = program_hook
        if value is exc:
            value.__traceback__ = traceback = tb  # the default hook prints value.__traceback__
        program_hook(exc_type, value, traceback)

    sys.excepthook = once
