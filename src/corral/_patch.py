"""corral.patch(): put corral's pools under code written for the stdlib's.

While active, `multiprocessing.pool.ThreadPool` (hence `multiprocessing.dummy.Pool`) and
`concurrent.futures.ThreadPoolExecutor` (also reached as `concurrent.futures.thread.ThreadPoolExecutor`)
build corral's thread pools, and the process pools that _process_pool.patch_targets() lists
(`multiprocessing.Pool`, `multiprocessing.pool.Pool(...)`, `ctx.Pool`, `concurrent.futures.ProcessPoolExecutor`,
joblib's loky/multiprocessing worker environment) build corral's process pools, whose workers each get
a share of the budget. Names a program imported before the patch are covered as well: the stdlib classes
get an `__init__` that makes the instance corral's when the stdlib class itself is called, so
`from concurrent.futures import ThreadPoolExecutor` at a module's top still gives a corral pool.
Subclasses of the stdlib classes that a library defined before the patch began are covered as under
the runner (where they are defined while the patch is active, on corral's classes): an instance becomes
one of `class Sub(Sub, corral_cls)`, so Sub's own methods come first and corral's replace the stdlib's.
Code that checks `type(x) is Sub` sees that combined class (isinstance still holds).

concurrent.futures' pools are patched when the patch is entered if the program imported concurrent.futures
already, else right after its first import of it (before that import binds a name): a program that only
makes multiprocessing's pools never imports concurrent.futures and logging (some 9 ms) under plain python,
nor does it under the patch.

Leaving the outermost patch puts back every attribute exactly as it was (absent ones removed again).
Patching is process-wide: enter and leave it from one thread, not around code that other threads are
busy constructing pools in.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing.pool
import os
import sys
import threading
import types

from . import _import_hooks, _joblib, _pool_settings, _thread_limits
from ._process_pool import _STDLIB_THREAD_POOL, Pool, futures_patch_targets, patch_targets
from ._thread_pool import ThreadPool

# Imported when the program needs them (concurrent.futures' pools, Dask's): tests/test_imports.py counts them.
EXECUTOR_MODULE = "corral._executor"
DASK_WORKER_MODULE = "corral._dask_worker"
DEFERRED_IMPORTS = (DASK_WORKER_MODULE, EXECUTOR_MODULE)

_MISSING = object()
_lock = threading.RLock()
_depth = 0
_saved: list[tuple[object, str, object]] = []  # (owner, attribute, previous value or _MISSING)
_active_description: list[str] = []
_cleanups: list = []  # undo steps that are not attribute assignments (the import hooks)
_patched_modules: set[str] = set()  # the libraries of _ON_IMPORT patched by the active patch
_retry: set[str] = set()  # those whose patch waits for an import of one of corral's modules to end


def _set(owner: object, name: str, value: object, *, stored: object = None) -> None:
    """Sets owner.name, saving for restore what owner's own namespace held: `stored`, where the caller read it
    already (a module's __getattr__ may have stored something there since), else what it holds now."""
    _saved.append((owner, name, vars(owner).get(name, _MISSING) if stored is None else stored))
    setattr(owner, name, value)


def _restore_all() -> None:
    _patched_modules.clear()
    _retry.clear()
    while _cleanups:
        _cleanups.pop()()
    while _saved:
        owner, name, previous = _saved.pop()
        if previous is _MISSING:
            with contextlib.suppress(AttributeError):
                delattr(owner, name)
        else:
            setattr(owner, name, previous)


def _redirecting_init(stdlib_cls: type, corral_cls: type):
    """An __init__ for `stdlib_cls` that makes its instances `corral_cls`'s, as the runner's do.

    - an instance of exactly `stdlib_cls` becomes a `corral_cls`;
    - an instance of a subclass S defined before the patch (a library's, at its import) becomes an
      instance of `class S(S, corral_cls)` (see _covering_class): the MRO a subclass defined under
      the patch gets, so S's own __init__ and methods still come first;
    - anything else (corral's own classes, classes defined under the patch, stdlib subclasses such
      as ThreadPool under Pool) runs the stdlib's __init__ unchanged.
    corral_cls subclasses stdlib_cls and adds no __slots__, so the instance can change class before
    corral_cls.__init__ runs with the caller's arguments. (A __new__ would do as well, but CPython
    cannot fully take an assigned __new__ back: deleting it leaves the class rejecting arguments.)
    """
    original_init = stdlib_cls.__dict__["__init__"]
    needs_init = getattr(corral_cls, "_needs_init", None)

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        cls = type(self)
        target = corral_cls if cls is stdlib_cls else _covering_class(cls, stdlib_cls, corral_cls)
        if target is not None:
            try:
                self.__class__ = target
            except TypeError:  # a layout __class__ assignment refuses: leave the instance alone
                target = None
        if target is None and needs_init is not None and isinstance(self, corral_cls) and needs_init(self):
            # A class on corral's (rebased under the patch) calling the stdlib's __init__ by name, or a
            # wrapper of it captured before the rebase: corral's __init__ runs, and reaches this one again
            # through super() once it has started.
            target = corral_cls
        if target is None:
            original_init(self, *args, **kwargs)
        else:
            corral_cls.__init__(self, *args, **kwargs)

    return __init__


_covering: dict[tuple[type, type], type | None] = {}  # (subclass, corral class) -> class (None: left alone)


def _covering_class(cls: type, stdlib_cls: type, corral_cls: type) -> type | None:
    """`class cls(cls, corral_cls)` for a third-party subclass of stdlib_cls defined before the
    patch; None for a class that is corral's already, or has the stdlib or corral between it and
    stdlib_cls (their own set-up handles it), or cannot be combined (__slots__, metaclasses)."""
    key = (cls, corral_cls)
    if key not in _covering:
        _covering[key] = None
        own = cls.__mro__[: cls.__mro__.index(stdlib_cls)]
        if not issubclass(cls, corral_cls) and not any(_is_stdlib_or_corral(k) for k in own):
            with contextlib.suppress(TypeError):
                _covering[key] = type(cls)(cls.__name__, (cls, corral_cls), {
                    "__module__": cls.__module__, "__qualname__": cls.__qualname__,
                    "__doc__": cls.__doc__})
    return _covering[key]


def _is_stdlib_or_corral(cls: type) -> bool:
    top = (getattr(cls, "__module__", None) or "").partition(".")[0]
    return top == "corral" or top in sys.stdlib_module_names


class patch(contextlib.ContextDecorator):
    """corral.patch(*, native=True, mode="dynamic", factor=1.0, force=False): a context manager (and
    decorator) that makes the stdlib thread and process pools corral's while it is active.

    native: set BLAS/OpenMP thread limits as thread-pool tasks start (False: leave them as they are).
    mode: "dynamic" or "static", how thread-pool tasks' inner threads are sized (docs/native.md,
    "Inner thread counts"); ValueError for anything else.
    factor: process pools' oversubscription factor (a number >= 1: TypeError / ValueError otherwise):
    each worker's CPU set, and its thread limits, grow to ceil(share * factor); joblib's workers get
    the same widened limits.
    force: process-pool and joblib workers get their share in every thread-limit variable even where
    the user set a lower value (default: the lower of the two).
    Explicit factor= / force= arguments of a corral.Pool or ProcessPoolExecutor still win.
    Nested patches are allowed; only the outermost one patches and restores (RuntimeError on entry when
    someone else's patch already replaced the stdlib pools, and on an exit without its entry). Entering
    returns the patch object.
    No stdlib counterpart; what is replaced is listed in the module's docs and by `python -m corral -v`.
    """

    def __init__(self, *, native: bool = True, mode: str = "dynamic", factor: float = 1.0, force: bool = False):
        if mode not in _pool_settings.MODES:
            raise ValueError(f"corral.patch: mode must be one of {', '.join(_pool_settings.MODES)}, not {mode!r}")
        try:
            self.factor = _pool_settings.validate_factor(factor)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"corral.patch: {exc}") from None
        self.native = bool(native)
        self.mode = mode
        self.force = bool(force)
        self._previous_settings = None
        self._entered = 0  # this object's entries not yet exited

    def __enter__(self) -> "patch":
        global _depth
        with _lock:
            if _depth == 0:
                self._previous_settings = _pool_settings.replace(native=self.native, mode=self.mode,
                                                                 factor=self.factor, force=self.force)
                try:
                    _patch_classes()
                except BaseException:
                    self._unpatch()
                    raise
            _depth += 1
            self._entered += 1
        return self

    def __exit__(self, *exc_info) -> None:
        global _depth
        with _lock:
            if self._entered == 0:  # a stray exit would leave the count wrong and later patches inert
                raise RuntimeError("corral.patch: __exit__ without a matching __enter__")
            self._entered -= 1
            _depth -= 1
            if _depth == 0:
                self._unpatch()

    def _unpatch(self) -> None:
        """Puts back every patched attribute and the settings this patch replaced (under _lock)."""
        _restore_all()
        _active_description.clear()
        if self._previous_settings is not None:
            _pool_settings.replace(**self._previous_settings)
            self._previous_settings = None


def _patch_classes() -> None:
    stdlib_pool = multiprocessing.pool.ThreadPool
    futures_thread = sys.modules.get("concurrent.futures.thread")
    if stdlib_pool is ThreadPool or (futures_thread is not None and _is_corrals(futures_thread.ThreadPoolExecutor)):
        raise RuntimeError("corral.patch: the stdlib pools are already replaced by someone else's patch")
    _set(stdlib_pool, "__init__", _redirecting_init(stdlib_pool, ThreadPool))
    _set(multiprocessing.pool, "ThreadPool", ThreadPool)
    _name_as(ThreadPool, stdlib_pool)
    _active_description[:] = ["multiprocessing.pool.ThreadPool -> corral.ThreadPool (also multiprocessing.dummy.Pool)"]
    # Process pools: their module (_process_pool.py) lists what to replace. concurrent.futures' are patched with
    # its thread pool below (_ON_IMPORT). joblib's part imports joblib and numpy, which a program that never
    # uses them must not pay for (nor find numpy loaded before it set OPENBLAS_NUM_THREADS): it is patched when
    # the program imports joblib.
    _patch_stdlib_pool()
    for owner, name, replacement in patch_targets(futures=False, joblib=False):
        _patch_target(owner, name, replacement)
    _active_description.append("names imported before patching: constructing the stdlib classes builds corral's, "
                               "and their subclasses defined before the patch run on corral's classes")
    _bound_loky_cpu_count()
    hook = _import_hooks.after_each_import_under(__package__, corral_module_imported)
    _cleanups.append(hook.remove)
    for module, (_targets, what) in _ON_IMPORT.items():
        if module in sys.modules and not _import_hooks.initializing(module):
            _patch_module(module)
        else:  # also one whose import is in progress (it imports a pool module first): when it is done
            hook = _import_hooks.after_import((module,), _patch_module_if_still_patched)
            _cleanups.append(hook.remove)
            _active_description.append(f"{what}, once the program imports {module}")


def _patch_stdlib_pool() -> None:
    """multiprocessing.pool.Pool stays the stdlib's class: the stdlib's ThreadPool derives from it, so
    `isinstance(ThreadPool(1), multiprocessing.pool.Pool)` and `issubclass(ThreadPool, Pool)` hold as
    under plain python (they would not if the name were corral's Pool, which the thread pools do not
    derive from). Constructing it builds corral's Pool (_redirecting_init); a class defined under the
    patch on it directly is rebased onto corral's Pool as it is defined, so that `type(p) is Sub` holds
    for its instances (a subclass defined before the patch is covered by _redirecting_init instead).
    What differs from plain python: `type(multiprocessing.pool.Pool())` is corral's Pool, a subclass
    of the stdlib's (named as it; README, "Limitations")."""
    stdlib_pool = multiprocessing.pool.Pool
    _set(stdlib_pool, "__init__", _redirecting_init(stdlib_pool, Pool))
    _name_as(Pool, stdlib_pool)
    _set(stdlib_pool, "__init_subclass__", classmethod(_rebasing_init_subclass(stdlib_pool, Pool)))
    _active_description.append("multiprocessing.pool.Pool(...) -> corral.Pool (the name stays the stdlib's "
                               "class, as ThreadPool's base)")


def _rebasing_init_subclass(stdlib_cls: type, corral_cls: type):
    """An __init_subclass__ for `stdlib_cls` that puts `corral_cls` in place of `stdlib_cls` among a
    new class's direct bases (what the class would get had the name been corral's); classes whose
    bases do not name stdlib_cls itself (ThreadPool's subclasses, corral's), thread pools that name it
    too (`class Both(ThreadPool, Pool)`), and one whose bases cannot change (a layout or MRO conflict)
    are left alone."""
    def __init_subclass__(cls, **kwargs):  # noqa: N807 (the hook's own name)
        super(stdlib_cls, cls).__init_subclass__(**kwargs)
        if (stdlib_cls in cls.__bases__ and not issubclass(cls, corral_cls) and not _is_stdlib_or_corral(cls)
                and not issubclass(cls, _STDLIB_THREAD_POOL)):  # a thread pool stays one (Both(ThreadPool, Pool))
            with contextlib.suppress(TypeError):
                cls.__bases__ = tuple(corral_cls if base is stdlib_cls else base for base in cls.__bases__)

    return __init_subclass__


def _patch_futures() -> None:
    """concurrent.futures' pools: ThreadPoolExecutor and ProcessPoolExecutor. Everything is looked up before
    anything is set: where one of corral's modules is halfway through its import (the program's `import
    corral._executor`, which imports concurrent.futures), this fails whole and is tried again when that
    import is done (corral_module_imported)."""
    import concurrent.futures.thread
    import importlib

    ThreadPoolExecutor = importlib.import_module(EXECUTOR_MODULE).ThreadPoolExecutor  # noqa: N806 (a class)
    process_targets = futures_patch_targets()
    stdlib_executor = concurrent.futures.thread.ThreadPoolExecutor
    if _is_corrals(stdlib_executor):  # someone else's patch (checked at entry where it was imported already)
        return
    _set(stdlib_executor, "__init__", _redirecting_init(stdlib_executor, ThreadPoolExecutor))
    _name_as(ThreadPoolExecutor, stdlib_executor)
    _set(concurrent.futures.thread, "ThreadPoolExecutor", ThreadPoolExecutor)
    # concurrent.futures resolves ThreadPoolExecutor lazily (module __getattr__); setting it here
    # shadows that until restore removes it again.
    _set(concurrent.futures, "ThreadPoolExecutor", ThreadPoolExecutor)
    _active_description.append("concurrent.futures.ThreadPoolExecutor -> corral.ThreadPoolExecutor")
    for owner, name, replacement in process_targets:
        previous = vars(owner).get(name)  # not getattr: concurrent.futures' __getattr__ stores what it returns
        if isinstance(replacement, type) and isinstance(previous, type):
            _name_as(replacement, previous)
        _patch_target(owner, name, replacement)


def _name_as(corral_cls: type, stdlib_cls: type) -> None:
    """While patched, corral_cls carries stdlib_cls's __module__ (their __qualname__ is the same): a program that
    prints a pool's type or repr prints what it prints under plain python (docs/architecture.md, invariant 8),
    and pickle finds the class by that name, which the patch makes corral's. Outside the patch the class
    carries its own module's name (`corral._thread_pool`...), where pickle and inspect find it.
    isinstance(x, corral.ThreadPool)... tells the two apart."""
    if vars(corral_cls)["__module__"] != stdlib_cls.__module__:  # the executors' module pair is patched twice
        _set(corral_cls, "__module__", stdlib_cls.__module__)


def _is_corrals(executor: object) -> bool:
    ours = sys.modules.get(EXECUTOR_MODULE)
    return ours is not None and executor is ours.ThreadPoolExecutor


def _patch_target(owner: object, name: str, replacement: object) -> None:
    stored = vars(owner).get(name, _MISSING)  # before getattr: a module's __getattr__ may store what it returns
    previous = getattr(owner, name, None)  # (concurrent.futures does: it would store the replacement of .process)
    _set(owner, name, replacement, stored=stored)
    target = _qualified(replacement)
    _active_description.append(f"{_qualified(owner)}.{name} -> " + (
        f"wrapped by {replacement.__module__}" if "<locals>" in target else target))
    # Names imported before the patch (`from concurrent.futures import ProcessPoolExecutor`):
    # the stdlib class builds corral's, as for the thread pools above.
    if (isinstance(previous, type) and isinstance(replacement, type) and previous is not replacement
            and issubclass(replacement, previous) and "__init__" in previous.__dict__
            and not any(o is previous and n == "__init__" for o, n, _ in _saved)):
        _set(previous, "__init__", _redirecting_init(previous, replacement))


def _qualified(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
    package = sys.modules[__package__]
    if isinstance(obj, type) and name in package.__all__ and getattr(package, name) is obj:
        return f"{__package__}.{name}"  # a pool of corral's, which takes the stdlib's __module__ while patched
    return f"{module}.{name}" if module and not isinstance(obj, types.ModuleType) else name


# --- libraries patched once the program imports them -----------------------------------------

def _patch_targets_of(targets):
    """A patch step that applies the (owner, name, replacement) that targets() lists."""
    def apply() -> None:
        for owner, name, replacement in targets():
            _patch_target(owner, name, replacement)

    return apply


def _dask_targets(function: str):
    """_dask_worker's `function`, its module imported when a Dask module is."""
    def targets():
        import importlib

        return getattr(importlib.import_module(DASK_WORKER_MODULE), function)()

    return targets


FUTURES_MODULE = "concurrent.futures"
# module -> (the step that patches it, what -v says). Imported on demand: concurrent.futures imports logging
# (with it some 9 ms; see the module's docs); joblib imports numpy (~0.2 s, and OpenBLAS loaded before a program
# that sets OPENBLAS_NUM_THREADS itself has done so); distributed is heavy, and so is corral's part for it.
_ON_IMPORT = {
    FUTURES_MODULE: (_patch_futures, "concurrent.futures.ThreadPoolExecutor -> corral.ThreadPoolExecutor, "
                                     "concurrent.futures.ProcessPoolExecutor -> corral.ProcessPoolExecutor"),
    _joblib.JOBLIB_MODULE: (_patch_targets_of(_joblib.patch_targets),
                            "joblib's worker environment (loky, multiprocessing backends) -> corral's thread limits"),
    "distributed.nanny": (_patch_targets_of(_dask_targets("nanny_patch_targets")),
                          "Dask nannies leave out Dask's fixed OMP/MKL/OPENBLAS_NUM_THREADS=1 "
                          "while child Pythons join"),
    "distributed.worker": (_patch_targets_of(_dask_targets("worker_patch_targets")),
                           "Dask worker processes take their share of the machine's budget"),
}


def _patch_module(module: str) -> None:
    """Patches a module of _ON_IMPORT, once per patch (a hook of the patch's and one of the runner's
    _deferred_patch may both report it)."""
    if module in _patched_modules:
        return
    _patched_modules.add(module)
    try:
        _ON_IMPORT[module][0]()
    except (ImportError, AttributeError, RuntimeError):
        # Never the program's import to fail. One of corral's modules halfway through its import (ImportError,
        # AttributeError): tried again when an import of one of corral's modules is done. concurrent.futures
        # imported late in interpreter shutdown cannot import its thread module (RuntimeError), as under plain
        # python where the program asks for it: the module stays the stdlib's.
        _patched_modules.discard(module)
        _retry.add(module)


def corral_module_imported(_name: str = "") -> None:
    """An import of one of corral's modules is done (this patch's hook, and _deferred_patch's, report it): the
    modules whose patch waited for one are tried again. Not where another thread holds the lock: it may be
    entering the patch and waiting for the module lock that this thread's import holds until this returns
    (the next such import tries again)."""
    if not _retry or not _lock.acquire(blocking=False):
        return
    try:
        if _depth > 0:
            for module in sorted(_retry):
                _retry.discard(module)
                _patch_module(module)
    finally:
        _lock.release()


def library_imported(module: str) -> None:
    """_deferred_patch's hook: `module` (one of LIBRARY_MODULES or TRIGGER_MODULES) has been imported."""
    if module in _ON_IMPORT:
        _patch_module_if_still_patched(module)


def _bound_loky_cpu_count() -> None:
    """joblib.cpu_count() and n_jobs=-1 follow the budget while the patch is active, through
    loky's public knob LOKY_MAX_CPU_COUNT in os.environ (read at each call, so joblib need not be
    imported yet; child processes inherit it as they inherit CORRAL_CPUS). Restored at the end."""
    budget = _pool_settings.budget_cpus()
    changes = _thread_limits.loky_cpu_count_changes(budget, force=_pool_settings.get()["force"])
    if not changes:
        _active_description.append(f"LOKY_MAX_CPU_COUNT={os.environ.get('LOKY_MAX_CPU_COUNT')} kept "
                                   f"(yours; the budget is {budget}): joblib.cpu_count() and n_jobs=-1 follow it")
        return
    previous = _thread_limits.apply(changes)
    _cleanups.append(lambda: _thread_limits.restore(previous))
    _active_description.append(f"LOKY_MAX_CPU_COUNT={changes['LOKY_MAX_CPU_COUNT']} (the budget): "
                               "joblib.cpu_count() and Parallel(n_jobs=-1) follow the budget")


def _patch_module_if_still_patched(module: str) -> None:
    with _lock:
        if _depth > 0:  # not when the patch ended while the module was being imported
            _patch_module(module)


def is_patched() -> bool:
    """Whether a corral.patch() is active."""
    return _depth > 0


def describe() -> list[str]:
    """What the active patch replaced, one line each (empty when not patched)."""
    return list(_active_description)
