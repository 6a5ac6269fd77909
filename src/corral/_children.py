"""Child Python processes join the budget (docs/children.md; architecture.md invariant 5).

`python -m corral` exports CORRAL_CHILDREN; the `corral-children.pth` file the package installs in
site-packages makes every interpreter of that environment that starts with the variable set import this
module and call start(), before the child's own code runs (coverage.py reaches subprocesses the same way).
Interpreters without the variable pay one getenv; a Python without corral installed has no .pth file and
is left alone, as is anything that is not Python.

The variable's value carries the runner's settings, so that a child's pools behave as the
program's: "1" (the defaults), or a comma-separated list of `mode=dynamic|static`, `factor=F`,
`force`, `no-native`, and `budget=B@INPUTS`: the budget the runner decided and a digest of what it
decided it from (budget_inputs). A child gets child_share() (the one place that decides it), the runner's
limits for its own BLAS calls, and corral.patch() with those settings (entered at the child's first import of
a pool module: _deferred_patch.py).

This module is the whole of what a child whose budget is its parent's imports at its start, besides the
package (docs/children.md, "What a child costs": each module of corral's is some 1% of plain python's start).
So it imports no other module of corral's there: what it needs of them is spelled here too (the names
below; tests/test_children.py checks they agree), and the rest is imported by name (DEFERRED_IMPORTS) on
the paths that need it: a child that reads its own budget, one whose libraries need limits, and the
child's first import of a pool module (_PatchImports).
"""

import _signal  # signal's C module (3.11-3.14): signal.py imports enum, 3 ms at every child's start
import _thread
import os
import sys

# collections.abc's own module, which os loads at every start (collections.abc imports collections, and
# `from __future__ import annotations` the __future__ module: each some 0.3 ms of a child Python's start)
from _collections_abc import Mapping, MutableMapping

# Spelled here as where they belong, for this module's import cost (module docstring):
CHILDREN_VAR = "CORRAL_CHILDREN"  # _thread_limits.CHILDREN_VAR
BUDGET_VAR = "CORRAL_CPUS"  # _thread_limits.BUDGET_VAR
MAX_BUDGET = 65536  # _thread_limits.MAX_BUDGET
MODES = ("dynamic", "static")  # _pool_settings.MODES
# The imports the deferred patch acts on: _deferred_patch.TRIGGER_MODULES, LIBRARY_MODULES, and each of
# corral's own modules (its pending patch).
TRIGGER_MODULES = ("concurrent.futures", "multiprocessing.pool")
LIBRARY_MODULES = ("joblib._parallel_backends", "distributed.nanny", "distributed.worker")
PACKAGE_PREFIX = "corral."

# Imported by name where needed (not at a child's start): tests/test_imports.py counts them in the module graph.
DEFERRED_PATCH = "corral._deferred_patch"
POOL_SETTINGS = "corral._pool_settings"
PROGRAM_LIMITS = "corral._program_limits"
DEFERRED_IMPORTS = (DEFERRED_PATCH, POOL_SETTINGS, PROGRAM_LIMITS)


def _import(name: str):
    import importlib  # here, not at the top: importlib imports warnings (some 2% of a child's start)

    return importlib.import_module(name)


class Settings:
    """What the runner's options say about pools (corral.patch()'s arguments), and the budget it decided
    with the digest of its inputs (None: not recorded). A plain class: this module runs at every child's
    start, where a namedtuple would import collections and a dataclass inspect."""

    __slots__ = ("native", "mode", "factor", "force", "budget", "inputs")

    def __init__(self, native: bool = True, mode: str = "dynamic", factor: float = 1.0, force: bool = False,
                 budget: int | None = None, inputs: str | None = None):
        self.native, self.mode, self.factor, self.force = native, mode, factor, force
        self.budget, self.inputs = budget, inputs

    def replace(self, **changes) -> "Settings":
        return Settings(**{**{name: getattr(self, name) for name in self.__slots__}, **changes})

    def patch_settings(self) -> dict:
        """corral.patch()'s keyword arguments."""
        return {"native": self.native, "mode": self.mode, "factor": self.factor, "force": self.force}

    def __eq__(self, other) -> bool:
        return type(other) is Settings and all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"


def _digest(data: bytes) -> int:
    """64 bits of `data`, a 64-bit word at a time (its length first, as a word of its own; zeros pad the
    last word): each word is xored in, then the state multiplied by FNV's odd prime (which carries each bit
    upward) and xored with itself shifted right (which carries the high bits down, where the next word's
    multiplication spreads them again). Each step is a bijection modulo 2**64, so texts that differ in one
    word have different digests for sure, and texts that differ in several but by chance (a sum of shifted
    bytes, the first digest here, gave '9       \t' and '1       \n' the same one; FNV-1a alone, a word at a
    time, gives the same digest to every text that differs from another only in the top bits of its words).
    A word at a time, not a byte: a child computes it at its start, and a Python loop per byte of
    /proc/self/cgroup took some 0.2% of it. Not a defence against a digest forged on purpose:
    CORRAL_CHILDREN is corral's, and a value written by hand is trusted as the runner's within MAX_BUDGET."""
    h = 0xCBF29CE484222325
    for word in (len(data), *memoryview(data + bytes(-len(data) % 8)).cast("Q")):
        h = ((h ^ word) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h


def budget_inputs(environ: Mapping[str, str] | None = None) -> str:
    """A digest of what corral.budget() reads that a child may have otherwise than its parent: CORRAL_CPUS, the
    affinity mask, and the cgroup (the text of /proc/self/cgroup and the cgroup namespace it is read in:
    under a namespace of its own a child may read its parent's text from another cgroup). The quota and
    cpusets of one cgroup are taken as the parent read them: a child's limits at its start are then the
    program's own, decided once at its start (_program_limits.py), and its pools read corral.budget()
    itself as they are made. An input that cannot be read gives a digest no parent recorded."""
    environ = os.environ if environ is None else environ
    try:
        with open("/proc/self/cgroup", "rb") as f:
            cgroup = f.read()
        namespace = os.stat("/proc/self/ns/cgroup").st_ino
        affinity = sorted(os.sched_getaffinity(0))
    except OSError:
        return "unread"
    head = f"{environ.get(BUDGET_VAR)}|{affinity}|{namespace}|".encode("utf-8", "surrogateescape")
    return format(_digest(head + cgroup), "x")


def encode(settings: Settings) -> str:
    """The value of CORRAL_CHILDREN that gives children `settings`."""
    words = [f"mode={settings.mode}", f"factor={settings.factor!r}"]  # repr: every digit (1.0000001 is not 1)
    if settings.force:
        words.append("force")
    if not settings.native:
        words.append("no-native")
    if settings.budget is not None:
        words.append(f"budget={settings.budget}@{settings.inputs}")
    return ",".join(words)


def decode(value: str) -> Settings:
    """The settings in a CORRAL_CHILDREN value; ValueError (one line) for anything else."""
    value = value.strip()
    if value == "1":
        return Settings()
    fields: dict = {}
    for word in value.split(","):
        key, eq, arg = word.strip().partition("=")
        if key == "mode" and eq and arg in MODES:
            fields["mode"] = arg
        elif key == "factor" and eq:
            fields["factor"] = _factor(arg)
        elif word.strip() == "force":
            fields["force"] = True
        elif word.strip() == "no-native":
            fields["native"] = False
        elif key == "budget" and eq and _is_budget(arg):
            budget, _, fields["inputs"] = arg.partition("@")
            fields["budget"] = int(budget)
        else:
            raise ValueError(f"expected 1, or a list of mode=dynamic|static, factor=F, force, no-native, "
                             f"budget=B@INPUTS; got {word.strip()!r}")
    return Settings(**fields)


def _factor(arg: str) -> float:
    """_pool_settings.validate_factor's rule, for the text of a factor as the runner's -f reads it
    (tests/test_children.py checks they agree): a finite number >= 1."""
    try:
        value = float(arg)
    except ValueError:
        value = float("nan")
    if not value >= 1.0 or value == float("inf"):
        raise ValueError(f"factor must be a finite number >= 1, got {arg!r}")
    return value


def _is_budget(arg: str) -> bool:
    budget, at, inputs = arg.partition("@")
    return (budget.isascii() and budget.isdigit() and len(budget) <= len(str(MAX_BUDGET))
            and 1 <= int(budget) <= MAX_BUDGET and bool(at) and inputs.isascii() and inputs.isalnum())


def enable(settings: Settings, budget: int | None = None, inputs: str | None = None,
           environ: MutableMapping[str, str] | None = None) -> None:
    """The runner: children started from now on join the budget with `settings`. `budget` is recorded for
    them when `inputs`, the budget_inputs() read before the budget was, still read the same (else no
    budget is recorded, and each child reads its own)."""
    environ = os.environ if environ is None else environ
    recorded = budget is not None and inputs is not None and inputs == budget_inputs(environ)
    settings = settings.replace(budget=budget if recorded else None, inputs=inputs if recorded else None)
    environ[CHILDREN_VAR] = encode(settings)


def disable(environ: MutableMapping[str, str] | None = None) -> None:
    """The runner's --no-children: children are left alone (also those of a corral above this one)."""
    environ = os.environ if environ is None else environ
    environ.pop(CHILDREN_VAR, None)


def child_share(known_budget: int | None = None) -> int:
    """The budget of a child Python process: the one decision of what a child gets.

    The parent's budget as its cap (CORRAL_CPUS and the affinity a child inherits: `known_budget`, the
    one its parent recorded where the child's budget inputs read as its parent's, else corral.budget());
    the permits it runs on are drawn, with the program's and its other children's, from the program's
    tree share, which the child joins through the CORRAL_SHARE it inherits (docs/share.md, "The
    program's tree"). Its affinity is the one it inherited, and its CORRAL_CPUS too: its budget stays what
    corral.budget() reads, live, as the program's does. Process-pool workers and Dask workers get smaller,
    disjoint shares of their own (_worker_share.py, _dask_worker.py), applied after this one.
    """
    # The C extension (some 2 ms) is loaded only where the parent's budget does not apply.
    return _import(POOL_SETTINGS).budget_cpus() if known_budget is None else known_budget


class _PatchImports:
    """The import hook of a child's patch: it makes the child's _deferred_patch.DeferredPatch at the child's
    first import of a module the patch acts on (TRIGGER_MODULES, LIBRARY_MODULES, one of corral's own),
    once that module's code has run, and reports that import and every later one to it
    (DeferredPatch.imported; the patch then puts no hooks of its own on sys.meta_path). A child that never
    imports one of them pays for neither _deferred_patch nor what it imports (some 5% of a child's start),
    and the hook is on sys.meta_path from before the program's code runs, as the runner's are: a program
    that saves sys.meta_path and restores it later keeps it.

    A finder by protocol, as _import_hooks' are, and like them it finds nothing itself: it wraps the
    module's loader, and hands the module its real loader back before it reports the import. The patch is
    made only while none of corral's modules is being imported (the patch imports them, and one imported
    again halfway through its own import would fail, or be a second copy): at the end of the outermost,
    which is watched too. Making it imports modules neither in find_spec (under the import system's lock)
    nor under this object's lock (a thread that reports an import meanwhile may hold a module lock they
    need): one thread makes it, and another that reports an import meanwhile leaves it to that one, which
    reports it once the patch has started. Where making it fails (ImportError, AttributeError,
    RuntimeError, as entering the patch may: DeferredPatch._enter) or is interrupted (an exception a signal
    handler raised), everything is as before and the next import tries again; the program's import goes
    on, or gets the signal handler's exception, as under plain python."""

    corral_import_hook = True  # as _import_hooks._Hook: neither asks the other

    def __init__(self, settings: Settings, budget: int):
        self._settings = settings
        self._budget = budget
        self._lock = _thread.allocate_lock()  # threading.Lock, without importing threading
        self._patch = None  # the DeferredPatch, once started
        self._starting = False  # a thread is making it
        self._stopped = False
        self._imported_meanwhile: list = []  # imports reported while another thread made it

    def find_spec(self, fullname, path, target=None):
        if self._stopped or not (fullname in TRIGGER_MODULES or fullname in LIBRARY_MODULES
                                 or fullname.startswith(PACKAGE_PREFIX)):
            return None
        for finder in list(sys.meta_path):
            if getattr(finder, "corral_import_hook", False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is not None and hasattr(loader, "exec_module") and not isinstance(loader, _StartAfterLoad):
            spec.loader = _StartAfterLoad(loader, self, fullname)
        return spec

    def imported(self, name: str | None) -> None:
        """`name`'s code ran (None: nothing was imported, start now): the patch is made if it is not yet,
        and told."""
        with self._lock:
            if self._stopped:
                return
            patch = self._patch
            if patch is None:
                if self._starting:
                    if name is not None:
                        self._imported_meanwhile.append(name)
                    return
                if _corral_module_initializing(but=name):
                    return  # made at the end of that import
                self._starting = True
        if patch is None:
            patch = self._start()
            if patch is None:
                return
        if name is not None:
            patch.imported(name)

    def _start(self):
        """The started DeferredPatch, or None where it could not be made now."""
        patch = None
        try:
            patch = _import(DEFERRED_PATCH).DeferredPatch(**self._settings.patch_settings())
            patch.start(budget=self._budget, hooks=False)  # as under the runner (a trigger: entered now)
        except BaseException as exc:
            try:
                if patch is not None:
                    patch.stop()
            finally:
                with self._lock:
                    self._starting = False
                    self._imported_meanwhile.clear()  # the next start sees what they imported
            if isinstance(exc, (ImportError, AttributeError, RuntimeError)):
                return None
            raise
        with self._lock:
            self._patch, self._starting = patch, False
            names, self._imported_meanwhile = self._imported_meanwhile, []
        for other in names:
            patch.imported(other)
        return patch

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            patch, self._patch = self._patch, None
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        if patch is not None:
            patch.stop()


def _corral_module_initializing(but: str | None) -> bool:
    """Whether one of corral's modules other than `but` (whose code has run: it is marked as initializing
    until its loader returns) is being imported, in any thread."""
    for name, module in list(sys.modules.items()):
        if name.startswith(PACKAGE_PREFIX) and name != but \
                and getattr(getattr(module, "__spec__", None), "_initializing", False):
            return True
    return False


class _StartAfterLoad:
    """The module's loader, by protocol, with _PatchImports.imported after the module's code ran (not where it
    raised: the import fails as it would anyway, and the next one is watched again).

    It and _PatchImports.find_spec are _import_hooks' _CallbackAfterLoad and _Hook.find_spec again, kept
    alike by hand: importing _import_hooks would cost a child's start some 2%, and _import_hooks cannot
    import this module (the module graph would close a cycle through _deferred_patch)."""

    def __init__(self, loader, hook: _PatchImports, name: str):
        self._loader = loader
        self._hook = hook
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        # What a program sees of the module is what plain python gives it: the real loader.
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self._loader
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self._loader
        # The import system binds a submodule to its package only once this returns; the patch may reach
        # it through the package (`import concurrent.futures` then concurrent.futures.X), so bind now.
        parent, _, child = self._name.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, module)
        self._hook.imported(self._name)

    def __getattr__(self, name):  # get_source, get_code, is_package...: the real loader's
        return getattr(self._loader, name)


_active: "_PatchImports | None" = None  # what start_in_child started (end_in_child ends it)


def start_in_child(environ: MutableMapping[str, str] | None = None) -> None:
    """In a child, before its own code: its share, the runner's limits for its own BLAS calls
    (_program_limits.py: only where the budget is below the CPUs the libraries see), and corral.patch()
    with the parent's settings, entered at the child's first import of a pool module (_deferred_patch.py).
    ValueError for a malformed CORRAL_CHILDREN or CORRAL_CPUS."""
    global _active
    environ = os.environ if environ is None else environ
    try:
        settings = decode(environ.get(CHILDREN_VAR, "1"))
    except ValueError as exc:
        raise ValueError(f"{CHILDREN_VAR}: {exc}") from None
    inputs = budget_inputs(environ)
    known = settings.budget if settings.budget is not None and settings.inputs == inputs else None
    budget = child_share(known)
    if known is None:
        enable(settings, budget, inputs, environ)  # for its own children, as the runner records it
    visible = len(os.sched_getaffinity(0))
    if settings.native and budget < visible:  # else the libraries' defaults fit: nothing to decide
        _program_limits = _import(PROGRAM_LIMITS)
        _program_limits.apply(budget, _program_limits.decide(budget, visible, environ), environ)
    _active = _PatchImports(settings, budget)
    sys.meta_path.insert(0, _active)  # before the program's code: whatever it does to the list, it is there
    if known is None or any(name in sys.modules for name in TRIGGER_MODULES):
        # Its budget is not its parent's: the patch's start-up settings (LOKY_MAX_CPU_COUNT) are not the
        # environment it inherited, so they are set now, as the runner sets them. Or a pool module is
        # imported already (by a .pth file read before corral's): the patch is entered now.
        _active.imported(None)


def end_in_child() -> None:
    """Leaves the patch start_in_child started (the runner started as a child takes over)."""
    global _active
    if _active is not None:
        _active.stop()
        _active = None


def started() -> bool:
    """Whether this process joined the budget as a child (start_in_child ran)."""
    return _active is not None


def start(mask: set) -> None:
    """Run by corral-children.pth at interpreter startup when CORRAL_CHILDREN is set, after the .pth line
    blocked SIGINT (`mask`: the signal mask before that).

    This runs inside site.py, before the child's own code: an exception here would be printed by site with
    a traceback and the child would run without corral; a SystemExit or KeyboardInterrupt would abort the
    interpreter ("Fatal Python error: init_import_site", exit 1). So:
    - a bad CORRAL_CHILDREN or CORRAL_CPUS is one line on stderr and exit 2 (as the runner refuses them);
    - a SIGINT that arrives meanwhile (a parent may interrupt its child that early) waits, blocked, until
      the set-up is done, then ends the process by SIGINT, as a KeyboardInterrupt at the top of the child's
      own code would under plain python.
    """
    try:
        if not started():  # site may read the .pth twice (a venv's site-packages, 3.11)
            start_in_child()
    except ValueError as exc:
        sys.stderr.write(f"corral: {exc}\n")
        sys.stderr.flush()
        os._exit(2)
    finally:
        if _signal.SIGINT not in mask and _signal.SIGINT in _signal.sigpending() \
                and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
            _signal.signal(_signal.SIGINT, _signal.SIG_DFL)  # delivered when unblocked below: the process ends
        _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
