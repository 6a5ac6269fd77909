"""The runner's patch, entered when the program first needs it (docs/architecture.md, "Start-up").

`python -m corral` and every child Python under it (_children.py) run their program under corral.patch()
for its whole life. The patch subclasses the stdlib pools, so entering it imports multiprocessing.pool,
concurrent.futures and corral's pools, permits and wait hooks: some 40 ms and 10,000 objects, which a
program that never makes a pool (a script, a tool run through subprocess) would pay at every start
(plain python starts in about 9 ms). start() therefore enters it at once only where one of TRIGGER_MODULES
is imported already; otherwise it enters it right after the program's first import of one of them, before
that import statement binds a name, so a program can reach no stdlib pool class that is not patched yet.

A library that corral.patch() reaches on import (LIBRARY_MODULES: joblib, Dask's nanny and worker) imports
a trigger module while its own import is in progress; the patch cannot patch a half-imported module, so this
module's hook reports the library when its import is done (_patch.library_imported).

This module imports no pool module; the patch module is imported by name when it is needed.
"""

from __future__ import annotations

import _thread
import gc
import importlib
import sys

from . import _import_hooks, _pool_settings

# Every stdlib pool the patch replaces is reached through one of these. Not multiprocessing itself, which
# programs and libraries import for Process, Queue or cpu_count(): multiprocessing.Pool(), ctx.Pool() and
# multiprocessing.dummy.Pool() import multiprocessing.pool when called, and the name they then take from it
# is corral's.
TRIGGER_MODULES = ("concurrent.futures", "multiprocessing.pool")
# The libraries _patch patches once they are imported (its _ON_IMPORT; tests/test_patch.py checks both agree).
LIBRARY_MODULES = ("joblib._parallel_backends", "distributed.nanny", "distributed.worker")
PACKAGE = "corral"
PATCH_MODULE = "corral._patch"  # imported when the patch is entered, never before
DEFERRED_IMPORTS = (PATCH_MODULE,)  # tests/test_imports.py counts it in the module graph


class DeferredPatch:
    """corral.patch(**settings), entered by start() now or at the program's first import of a pool module
    (from whichever thread imports it), and left by stop(). Call start and stop from one thread, before
    and after the program runs."""

    def __init__(self, **settings):
        self._settings = settings
        self._patch = None  # the entered corral.patch
        self._previous_settings = None  # the pool settings start() replaced
        self._pending = False  # triggered while corral's own modules were being imported (see _enter)
        self._hooks = []  # the libraries' hooks (for the patch's life)
        self._trigger_hooks = []  # the trigger modules' and corral's own modules' hooks (until entered)
        self._lock = _thread.allocate_lock()  # threading.Lock, without importing threading
        self._collect_until = None  # see collect_on_entry

    def start(self, *, now: bool = False) -> None:
        """Enters the patch now when `now` or when a trigger module is imported already, else at the first
        import of one."""
        # The settings now (the patch sets the same ones when it is entered): pools and children read them.
        self._previous_settings = _pool_settings.replace(**self._settings)
        if now or any(name in sys.modules for name in TRIGGER_MODULES):
            self._enter()
        else:
            self._trigger_hooks = [_import_hooks.after_import(TRIGGER_MODULES, self._triggered),
                                   _import_hooks.after_each_import_under(PACKAGE, self._corral_module_imported)]
        self._hooks.append(_import_hooks.after_import(LIBRARY_MODULES, self._library_imported))

    def stop(self) -> None:
        for hook in self._hooks + self._trigger_hooks:
            hook.remove()
        self._hooks.clear()
        self._trigger_hooks.clear()
        self._pending = False
        if self._patch is not None:
            self._patch.__exit__(None, None, None)
            self._patch = None
        if self._previous_settings is not None:
            _pool_settings.replace(**self._previous_settings)
            self._previous_settings = None

    def collect_on_entry(self, full_collections: int) -> None:
        """The patch, once entered, runs a full collection if the program has run none since the collector's
        count of full collections was `full_collections`. The runner collects before the program starts so
        that the program's full collections come no earlier than under plain python (its own imports left
        some 8,000 objects pending: W8, 100,000 futures, ran 10 full collections of up to 1.1 M objects
        instead of 9, about 10% of its run); the patch's imports, now made at the program's first import of a
        pool module, leave some 10,000 more. A program that has run no full collection yet holds at most
        about 80,000 objects more than at its start (a full collection is due after 11 young ones of 7,000
        allocations each, 3.11's thresholds), so this one costs a few milliseconds at most."""
        self._collect_until = full_collections

    @property
    def entered(self):
        """The corral.patch entered so far, or None."""
        return self._patch

    def _enter(self, just_imported: str | None = None) -> None:
        """Enters the patch, or, while one of corral's own modules is still being imported (the program's
        `import corral._thread_pool` imports a trigger module at its top, and the patch imports that module
        again), once the last of them is done (_corral_module_imported). Any thread may get here (the one
        that imports); the import runs without this object's lock, which another thread's import of one
        of corral's modules could otherwise wait on while holding a module lock the import needs."""
        if self._patch is not None:
            return
        if self._corral_busy(just_imported):
            self._pending = True
            if self._corral_busy(just_imported):  # else that import ended meanwhile, before seeing _pending
                return
        patch_module = importlib.import_module(PATCH_MODULE)
        with self._lock:
            if self._patch is None:
                self._pending = False
                entered = patch_module.patch(**self._settings)
                entered.__enter__()
                self._patch = entered
                for hook in self._trigger_hooks:  # their work is done
                    hook.remove()
                if (self._collect_until is not None and gc.isenabled()
                        and gc.get_stats()[2]["collections"] <= self._collect_until):
                    gc.collect()

    @staticmethod
    def _corral_busy(just_imported: str | None) -> bool:
        return any(name.startswith(PACKAGE + ".") and name != just_imported and _import_hooks.initializing(name)
                   for name in list(sys.modules))

    def _triggered(self, _name: str) -> None:
        self._enter()

    def _corral_module_imported(self, name: str) -> None:
        if self._pending:
            self._enter(just_imported=name)

    def _library_imported(self, name: str) -> None:
        # A hook fires once: for the other libraries, a new one (the next may be imported later).
        remaining = tuple(m for m in LIBRARY_MODULES if m != name and m not in sys.modules)
        if remaining:
            self._hooks.append(_import_hooks.after_import(remaining, self._library_imported))
        self._enter()  # a library imported without a trigger module (none today): the patch now
        if self._patch is not None:
            sys.modules[PATCH_MODULE].library_imported(name)
        # else pending: the patch, once entered, finds the library imported and patches it
