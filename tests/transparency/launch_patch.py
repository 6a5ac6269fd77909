"""`python launch_patch.py prog.py [args]`: run prog.py under corral.patch(), as `python prog.py [args]` would.

The transparency suite's third mode (the others: plain python, `python -m corral prog.py`). It enters
corral.patch() for the whole run (never left, as the runner does) and then executes the program's code in
this interpreter's own `__main__` module, emptied first, so that:

  - `__name__ == "__main__"`, `__file__` is the absolute path, `__spec__` is None, `sys.argv` is
    `[prog.py as given, *args]` and `sys.path[0]` the program's directory (symlinks resolved), as python
    sets them for a script;
  - `sys.modules["__main__"]` stays the program's module until exit (atexit handlers, pool threads and
    pickling after the last line see it), and it is the very module multiprocessing aliased as
    `__mp_main__` when corral imported it, as under plain python; spawn/forkserver children re-run the
    program from `__file__` as under plain python;
  - an uncaught exception, KeyboardInterrupt or SystemExit takes python's own path (traceback, exit code,
    death by SIGINT after atexit/finalisation), because nothing here catches it.

Limits (what differs from `python prog.py` on purpose or unavoidably, so never compared by the suite):
  - tracebacks of uncaught exceptions start with one extra frame (this file, `<module>`): the suite
    compares only the last line of stderr;
  - corral, multiprocessing, concurrent.futures and their imports are already in sys.modules when the
    program starts (as under the runner);
  - runpy.run_path(path, run_name="__main__") was not used: it swaps in a temporary `__main__` and puts
    this file's module back after the program's last line, so `sys.modules["__main__"] is
    sys.modules["__mp_main__"]` would be False and atexit handlers would see the launcher's module.
"""

import sys


def _prepare():
    import importlib.machinery
    import io
    import os

    if len(sys.argv) < 2:
        print("usage: python launch_patch.py prog.py [args]", file=sys.stderr)
        raise SystemExit(2)
    path = sys.argv[1]
    absolute = os.path.abspath(path)
    with io.open_code(absolute) as f:
        source = f.read()
    code = compile(source, absolute, "exec", dont_inherit=True)
    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(os.path.realpath(path))

    import corral

    corral.patch().__enter__()  # for the whole program, as `python -m corral` does

    namespace = sys.modules["__main__"].__dict__
    for name in list(namespace):  # the launcher's own names must not be visible to the program
        if name not in ("__name__", "__builtins__"):
            del namespace[name]
    namespace.update(__file__=absolute, __cached__=None, __doc__=None, __package__=None, __spec__=None,
                     __annotations__={},
                     __loader__=importlib.machinery.SourceFileLoader("__main__", absolute))
    return code, namespace


exec(*_prepare())
