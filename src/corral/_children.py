"""Child Python processes join the budget (docs/children.md; architecture.md invariant 5).

`python -m corral` exports CORRAL_CHILDREN; the `corral-children.pth` file the package installs in
site-packages makes every interpreter of that environment that starts with the variable set import
_child_startup, which calls start_in_child() before the child's own code runs (coverage.py reaches
subprocesses the same way). Interpreters without the variable pay one getenv; a Python without
corral installed has no .pth file and is left alone, as is anything that is not Python.

The variable's value carries the runner's settings, so that a child's pools behave as the
program's: "1" (the defaults), or a comma-separated list of `mode=dynamic|static`, `factor=F`,
`force`, `no-native`. A child gets child_share() (the one place that decides it), the runner's
limits for its own BLAS calls, and corral.patch() with those settings (entered at the child's first import of
a pool module: _deferred_patch.py).
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Mapping, MutableMapping

from . import _core, _deferred_patch, _pool_settings, _program_limits
from ._thread_limits import BUDGET_VAR, CHILDREN_VAR


# What the runner's options say about pools (corral.patch()'s arguments). Namedtuples here, not dataclasses:
# this module runs at every child's start, and dataclasses imports inspect (some 10 ms).
Settings = namedtuple("Settings", "native mode factor force", defaults=(True, "dynamic", 1.0, False))


def encode(settings: Settings) -> str:
    """The value of CORRAL_CHILDREN that gives children `settings`."""
    words = [f"mode={settings.mode}", f"factor={settings.factor:g}"]
    if settings.force:
        words.append("force")
    if not settings.native:
        words.append("no-native")
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
        else:
            raise ValueError(f"expected 1, or a list of mode=dynamic|static, factor=F, force, no-native; "
                             f"got {word.strip()!r}")
    return Settings(**fields)


def enable(settings: Settings, environ: MutableMapping[str, str] | None = None) -> None:
    """The runner: children started from now on join the budget with `settings`."""
    environ = os.environ if environ is None else environ
    environ[CHILDREN_VAR] = encode(settings)


def disable(environ: MutableMapping[str, str] | None = None) -> None:
    """The runner's --no-children: children are left alone (also those of a corral above this one)."""
    environ = os.environ if environ is None else environ
    environ.pop(CHILDREN_VAR, None)


# What a child process gets of the budget: budget, its CORRAL_CPUS (an int); cpus, its affinity (a frozenset
# of CPU ids; None: the one it inherited).
ChildShare = namedtuple("ChildShare", "budget cpus")


def child_share(environ: Mapping[str, str] | None = None) -> ChildShare:
    """The share of a child Python process: the one decision of what a child gets.

    The parent's budget as its cap (CORRAL_CPUS and the affinity a child inherits); the permits it runs
    on are drawn, with the program's and its other children's, from the program's tree share, which
    the child joins through the CORRAL_SHARE it inherits (docs/share.md, "The program's tree").
    Process-pool workers and Dask workers get smaller, disjoint shares of their own (_worker_share.py,
    _dask_worker.py), applied after this one.
    """
    del environ  # unused: the budget reads CORRAL_CPUS itself, the permit table CORRAL_SHARE
    return ChildShare(budget=int(_core.budget().cpus), cpus=None)


def apply_share(share: ChildShare, environ: MutableMapping[str, str] | None = None) -> None:
    environ = os.environ if environ is None else environ
    if share.cpus is not None:
        os.sched_setaffinity(0, share.cpus)
    if BUDGET_VAR in environ or share.budget != len(os.sched_getaffinity(0)):
        environ[BUDGET_VAR] = str(share.budget)


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
    share = child_share(environ)
    apply_share(share, environ)
    if settings.native:
        limits = _program_limits.decide(share.budget, len(os.sched_getaffinity(0)), environ)
        _program_limits.apply(share.budget, limits, environ)
    _active = _deferred_patch.DeferredPatch(native=settings.native, mode=settings.mode, factor=settings.factor,
                                            force=settings.force)
    _active.start()  # for the child's whole life, as under the runner; entered at its first pool import


def end_in_child() -> None:
    """Leaves the patch start_in_child entered (the runner started as a child takes over)."""
    global _active
    if _active is not None:
        _active.stop()
        _active = None


def started() -> bool:
    """Whether this process joined the budget as a child (start_in_child ran)."""
    return _active is not None
