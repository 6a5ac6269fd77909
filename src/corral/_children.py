"""Child Python processes join the budget (docs/children.md; architecture.md invariant 5).

`python -m corral` exports CORRAL_CHILDREN; the `corral-children.pth` file the package installs in
site-packages makes every interpreter of that environment that starts with the variable set import
_child_startup, which calls start_in_child() before the child's own code runs (coverage.py reaches
subprocesses the same way). Interpreters without the variable pay one getenv; a Python without
corral installed has no .pth file and is left alone, as is anything that is not Python.

The variable's value carries the runner's settings, so that a child's pools behave as the
program's: "1" (the defaults), or a comma-separated list of `mode=dynamic|static`, `factor=F`,
`force`, `no-native`, and `budget=B@INPUTS`: the budget the runner decided and a digest of what it
decided it from (budget_inputs). A child gets child_share() (the one place that decides it), the runner's
limits for its own BLAS calls, and corral.patch() with those settings (entered at the child's first import of
a pool module: _deferred_patch.py).

A child whose budget inputs read as the runner's takes the runner's budget as it is, without loading the
C extension (about 2 ms of a child's 10 ms start; docs/children.md, "What a child costs"); any other child
reads its budget as corral.budget() does, and records it for its own children.
"""

import os

# collections.abc's own module, which os loads at every start (collections.abc imports collections, and
# `from __future__ import annotations` the __future__ module: each some 0.3 ms of a child Python's start)
from _collections_abc import Mapping, MutableMapping

from . import _deferred_patch, _pool_settings
from ._thread_limits import BUDGET_VAR, CHILDREN_VAR, MAX_BUDGET

# Imported by name where needed (not at a child's start): tests/test_imports.py counts it in the module graph.
PROGRAM_LIMITS = "corral._program_limits"
DEFERRED_IMPORTS = (PROGRAM_LIMITS,)


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

    def __eq__(self, other) -> bool:
        return type(other) is Settings and all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"


def _fnv1a(data: bytes) -> int:
    """FNV-1a, 64 bits: every byte is mixed by a multiplication, so texts that differ anywhere give
    different digests but by chance (a sum of shifted bytes, the first digest here, gave '9       \t' and
    '1       \n' the same one). Not a defence against a digest forged on purpose: CORRAL_CHILDREN is
    corral's, and a value written by hand is trusted as the runner's within MAX_BUDGET."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
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
    return format(_fnv1a(head + cgroup), "x")


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
        if key == "mode" and eq and arg in _pool_settings.MODES:
            fields["mode"] = arg
        elif key == "factor" and eq:
            try:
                fields["factor"] = _pool_settings.validate_factor(arg)
            except (TypeError, ValueError):
                raise ValueError(f"factor must be a finite number >= 1, got {arg!r}") from None
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


class ChildShare:
    """What a child process gets of the budget: budget, the count its start-up limits follow (an int). Its
    affinity is the one it inherited, and its CORRAL_CPUS too: its budget stays what corral.budget() reads,
    live, as the program's does (a quota changed since the runner started included)."""

    __slots__ = ("budget",)

    def __init__(self, budget: int):
        self.budget = budget


def child_share(known_budget: int | None = None) -> ChildShare:
    """The share of a child Python process: the one decision of what a child gets.

    The parent's budget as its cap (CORRAL_CPUS and the affinity a child inherits: `known_budget`, the
    one its parent recorded where the child's budget inputs read as its parent's, else corral.budget());
    the permits it runs on are drawn, with the program's and its other children's, from the program's
    tree share, which the child joins through the CORRAL_SHARE it inherits (docs/share.md, "The
    program's tree"). Process-pool workers and Dask workers get smaller, disjoint shares of their own
    (_worker_share.py, _dask_worker.py), applied after this one.
    """
    # The C extension (some 2 ms) is loaded only where the parent's budget does not apply.
    return ChildShare(budget=_pool_settings.budget_cpus() if known_budget is None else known_budget)


_active: _deferred_patch.DeferredPatch | None = None  # the patch start_in_child started (end_in_child ends it)


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
    share = child_share(known)
    if known is None:
        enable(settings, share.budget, inputs, environ)  # for its own children, as the runner records it
    visible = len(os.sched_getaffinity(0))
    if settings.native and share.budget < visible:  # else the libraries' defaults fit: nothing to decide
        import importlib  # not at import: most children have nothing to decide

        _program_limits = importlib.import_module(PROGRAM_LIMITS)
        _program_limits.apply(share.budget, _program_limits.decide(share.budget, visible, environ), environ)
    _active = _deferred_patch.DeferredPatch(native=settings.native, mode=settings.mode, factor=settings.factor,
                                            force=settings.force)
    # For the child's whole life, as under the runner; entered at its first pool import.
    _active.start(budget=share.budget)


def end_in_child() -> None:
    """Leaves the patch start_in_child entered (the runner started as a child takes over)."""
    global _active
    if _active is not None:
        _active.stop()
        _active = None


def started() -> bool:
    """Whether this process joined the budget as a child (start_in_child ran)."""
    return _active is not None
