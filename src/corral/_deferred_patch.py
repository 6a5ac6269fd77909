"""The runner's patch, entered when the program first needs it (docs/architecture.md, "Start-up").

`python -m corral` and every child Python under it (_children.py) run their program under corral.patch()
for its whole life. The patch subclasses the stdlib pools, so entering it imports multiprocessing.pool and
corral's pools, permits and wait hooks (concurrent.futures' part once the program imports that, which this
module's trigger hook reports to it): some 25 ms and 10,000 objects, which a
program that never makes a pool (a script, a tool run through subprocess) would pay at every start
(plain python starts in about 9 ms). start() therefore enters it at once only where one of TRIGGER_MODULES
is imported already; otherwise it enters it right after the program's first import of one of them, before
that import statement binds a name, so a program can reach no stdlib pool class that is not patched yet.

A library that corral.patch() reaches on import (LIBRARY_MODULES: joblib, Dask's nanny and worker) imports
a trigger module while its own import is in progress; the patch cannot patch a half-imported module, so this
module's hook (in a child, the child's: start(hooks=False)) reports the library when its import is done
(_patch.library_imported).

Entering never makes the program's import fail: where it cannot be entered now (the trigger is imported by
one of corral's own modules, which the patch imports again; or late in interpreter shutdown, where
concurrent.futures can no longer register its exit), the program's import goes on and the patch is tried
again after the next import of one of corral's modules or of a trigger. Until then pools are the stdlib's,
as under plain python. What the program can see of this is in docs/architecture.md, "Start-up".

This module imports no pool module; the patch module is imported by name when it is needed.
"""

import _thread
import gc
import sys

from . import _import_hooks, _pool_settings, _thread_limits

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


def _move_to_oldest_generation() -> None:
    """Every tracked object to the collector's oldest generation, uncounted as pending and without a collection
    of it: gc.freeze() then gc.unfreeze() (3.11-3.14). gc.freeze() also zeroes the generations' counts (3.11-3.13),
    which would put the program's next full collection off by up to 77,000 allocations; they are given back:
    each gc.collect(1) adds one to the oldest generation's count, each gc.collect(0) one to the middle's, and both
    generations are empty just after gc.unfreeze(), so these collect next to nothing. The youngest's count (under
    700 allocations) is left at 0. Not given back on 3.14 (its incremental collector counts otherwise) nor on a
    free-threaded build (one generation)."""
    _, middle, oldest = gc.get_count()
    gc.freeze()
    gc.unfreeze()
    if sys.version_info >= (3, 14) or not getattr(sys, "_is_gil_enabled", lambda: True)():
        return
    for _ in range(oldest):
        gc.collect(1)
    for _ in range(middle):
        gc.collect(0)


class DeferredPatch:
    """corral.patch(**settings), entered by start() now or at the program's first import of a pool module
    (from whichever thread imports it), and left by stop(). Call start and stop from one thread, before
    and after the program runs."""

    def __init__(self, **settings):
        self._settings = settings
        self._patch = None  # the entered corral.patch
        self._previous_settings = None  # the pool settings start() replaced
        self._previous_environ = None  # the variables start() set (LOKY_MAX_CPU_COUNT)
        self._keep_schedule = False  # see keep_collections_on_schedule
        self._pending = False  # a trigger was imported, and the patch could not be entered yet
        self._lock = _thread.allocate_lock()  # threading.Lock, without importing threading
        self._hooks: list = []  # for stop()
        self._entering = None  # the thread inside entering the patch (whose imports may report back here)

    def start(self, *, now: bool = False, budget: int | None = None, hooks: bool = True) -> None:
        """Enters the patch now when `now` or when a trigger module is imported already, else at the first
        import of one. `budget`: the process's, where the caller read it already (else corral.budget()).
        `hooks`: watch the imports with hooks of its own; False: the caller reports each import of a module
        this acts on (imported(); a child's, whose hook is on sys.meta_path from its start: _children.py)."""
        # What the patch sets as it is entered, set now: pools read the settings, children inherit the
        # environment (joblib.cpu_count() and n_jobs=-1 follow LOKY_MAX_CPU_COUNT from the start, as before).
        self._previous_settings = _pool_settings.replace(**self._settings)
        budget = _pool_settings.budget_cpus() if budget is None else max(1, budget)
        changes = _thread_limits.loky_cpu_count_changes(budget, force=bool(self._settings.get("force", False)))
        self._previous_environ = _thread_limits.apply(changes) if changes else None
        if hooks:
            self._hooks.append(_import_hooks.after_import(LIBRARY_MODULES, self._library_imported, once=False))
        if now or any(name in sys.modules for name in TRIGGER_MODULES):
            self._triggered("")  # pending where it cannot be entered yet (a trigger imported by corral's own module)
        if hooks:
            # Both stay active once the patch is entered: the patch patches concurrent.futures when it is imported
            # (also where another thread's import of it was under way as it was entered), and waits for a halfway
            # import of corral's own executors to end to do so.
            self._hooks += [_import_hooks.after_import(TRIGGER_MODULES, self._triggered, once=False),
                            _import_hooks.after_each_import_under(PACKAGE, self._corral_module_imported)]

    def stop(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        if self._patch is not None:
            self._patch.__exit__(None, None, None)
            self._patch = None
        if self._previous_environ is not None:
            _thread_limits.restore(self._previous_environ)
            self._previous_environ = None
        if self._previous_settings is not None:
            _pool_settings.replace(**self._previous_settings)
            self._previous_settings = None

    def imported(self, name: str) -> None:
        """Module `name` was imported, as the caller of start(hooks=False) reports: what this object's own hook
        for it would have done."""
        if name in TRIGGER_MODULES:
            self._triggered(name)
        elif name in LIBRARY_MODULES:
            self._library_imported(name)
        elif name.startswith(PACKAGE + "."):
            self._corral_module_imported(name)

    def keep_collections_on_schedule(self) -> None:
        """The runner's: the objects the patch's imports make (some 10,000) go straight to the collector's
        oldest generation when it is entered, uncounted, as if they had been there when the program started.
        The runner collects before the program starts, so that the program's full collections come no
        earlier than under plain python (its own imports, left pending, once made W8, 100,000 futures, run
        10 full collections of up to 1.1 M objects instead of 9, about 10% of its run); the patch's imports,
        made at the program's first import of a pool module, would bring them forward again.
        _move_to_oldest_generation moves every tracked object there, the counts kept: none of the program's
        finalizers runs, and the program's own young objects of that moment are collected with the old ones.
        Not done where the program froze objects itself."""
        self._keep_schedule = True

    @property
    def entered(self):
        """The corral.patch entered so far, or None."""
        return self._patch

    def _enter(self) -> None:
        """Enters the patch, from whichever thread imports a trigger. The import runs without this object's
        lock: another thread's import of one of corral's modules could otherwise wait on it while holding a
        module lock the import needs. Any failure leaves the patch to the next try (module docstring)."""
        if self._patch is not None or self._entering == _thread.get_ident():
            return  # entered; or being entered by this thread, whose imports report back (the lock is not reentrant)
        try:
            import importlib  # not at this module's import: a child Python's start imports this module

            patch_module = importlib.import_module(PATCH_MODULE)
            with self._lock:
                if self._patch is None:
                    self._entering = _thread.get_ident()
                    try:
                        entered = patch_module.patch(**self._settings)
                        entered.__enter__()
                    finally:
                        self._entering = None
                    self._patch = entered
                    if self._keep_schedule and gc.isenabled() and gc.get_freeze_count() == 0:
                        _move_to_oldest_generation()
        except (ImportError, AttributeError, RuntimeError):
            # What entering too early raises: a partially imported module of corral's (ImportError,
            # AttributeError), or concurrent.futures refusing to register its exit late in shutdown
            # (RuntimeError). Anything else (an exception a signal handler raised meanwhile) is the program's.
            pass

    def _triggered(self, name: str) -> None:
        self._enter()
        self._pending = self._patch is None
        if self._patch is not None and name:
            # The patch patches concurrent.futures once its code has run, which is now (its own hook may not see
            # this import: it may have been under way as the patch was entered, or be what entered it).
            sys.modules[PATCH_MODULE].library_imported(name)

    def _corral_module_imported(self, name: str) -> None:
        if self._pending:  # the import that kept the patch out (one of corral's own) may be this one
            self._triggered(name)
        elif self._patch is not None:  # one the patch waits for to patch a module (concurrent.futures) may be
            sys.modules[PATCH_MODULE].corral_module_imported(name)

    def _library_imported(self, name: str) -> None:
        self._enter()  # a library imported without a trigger module (none today): the patch now
        if self._patch is not None:  # it patches a library once, however often it is told
            sys.modules[PATCH_MODULE].library_imported(name)
        # else: the patch, once entered, finds the library imported and patches it
