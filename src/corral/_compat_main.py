"""The stdlib internals that run a program as `__main__` (_as_main.py), apart from _compat.py's (which imports
multiprocessing) so that the runner's start imports no pool module (docs/architecture.md, "Start-up").
Tested on CPython 3.11, 3.13 and 3.14, as _compat.py's.
"""

from __future__ import annotations

import linecache
import runpy

# runpy._run_module_as_main(name, alter_argv): what python's own main (Modules/main.c) calls for `-m
# module` and for a directory or zip with __main__.py (3.11-3.14). It runs the module in the current
# __main__'s namespace and reports a module it cannot find as python does ("No module named x", exit 1).
# _as_main runs `python -m corral -m module` and `python -m corral dir/` through it.
run_module_as_main = runpy._run_module_as_main

# linecache._register_code(code, source, name): from 3.13, python's main registers the source of `-c`
# code this way (Python/pythonrun.c), so tracebacks show its lines; absent on 3.11. _as_main does the
# same for `python -m corral -c code`, where it exists. None on older Pythons.
register_source = getattr(linecache, "_register_code", None)
