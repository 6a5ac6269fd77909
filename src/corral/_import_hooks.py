"""Post-import hooks: callback(name) right after an import of a watched module ran the module's code, before the
import statement binds it. What corral patches on import uses them: the stdlib pools under the runner
(_deferred_patch.py) and libraries corral.patch() reaches once they are imported (_patch.py).

A hook is a finder on sys.meta_path by protocol (find_spec), not an importlib.abc.MetaPathFinder:
importlib.abc imports importlib.resources, pathlib and typing (18 ms and 2,800 objects that every full
collection of the program would traverse again). It finds nothing itself: it asks the other finders on
sys.meta_path (not corral's own) for the module and wraps that module's loader so that the callback follows
its execution. It goes just before the stdlib's PathFinder, not first (_insert). The module gets its
real loader back (`__loader__`, `__spec__.loader`) before the callback runs.

What a program may do to its imports is kept working:
- a hook fires when the module's code has run, not when it is looked up: `importlib.util.find_spec()` alone,
  or an import whose code raised, fires nothing, and the next import is watched again;
- a hook done with its work is made inert, not taken off sys.meta_path, since another thread may be walking
  that list in an import right now, and a removal would make it skip the finder after the hook
  (ModuleNotFoundError for a module that exists). remove() takes it off, for a patch that ends.
"""

import sys


class _Hook:
    # Marks corral's finders (this one, and a child's _children._PatchImports): each asks the finders that are
    # not corral's, so that two of them never ask each other in turn.
    corral_import_hook = True

    def __init__(self, names, callback, *, prefix: str | None = None, once: bool = True):
        self.names = frozenset(names)
        self.prefix = prefix + "." if prefix else None  # every submodule of this package is watched too
        self.callback = callback
        self.once = once  # fire for the first of the names only, then go inert
        self.active = True

    def _watches(self, fullname: str) -> bool:
        return self.active and (fullname in self.names or bool(self.prefix and fullname.startswith(self.prefix)))

    def find_spec(self, fullname, path, target=None):
        if not self._watches(fullname):
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
        if loader is None or not hasattr(loader, "exec_module") or isinstance(loader, _CallbackAfterLoad):
            return spec
        spec.loader = _CallbackAfterLoad(loader, self, fullname)
        return spec

    def fired(self, fullname: str) -> None:
        if not self._watches(fullname):  # a once-hook that another module fired meanwhile
            return
        if self.once:
            self.active = False
        self.callback(fullname)

    def remove(self) -> None:
        """Makes the hook inert and takes it off sys.meta_path (only where no import may run meanwhile in
        another thread: see the module's docstring)."""
        self.active = False
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass


class _CallbackAfterLoad:
    """A module loader (by protocol, as _Hook) that runs the hook's callback after the real loader executed
    the module. A module whose code raised is not called back (the import fails as it would anyway).
    A child's start has its own copy of this and of _Hook.find_spec (_children._StartAfterLoad, for its
    import cost): keep them alike."""

    def __init__(self, loader, hook: _Hook, name: str):
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
        # The import system binds a submodule to its package only once this returns; the callback may
        # reach it through the package (`import concurrent.futures` then concurrent.futures.X), so bind now.
        parent, _, child = self._name.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, module)
        self._hook.fired(self._name)

    def __getattr__(self, name):  # get_source, get_code, is_package...: the real loader's
        return getattr(self._loader, name)


def after_import(names, callback, *, once: bool = True) -> _Hook:
    """Installs a hook that calls callback(name) after an import of one of `names` (full module names) ran its
    code: once, for the first of them (once=True), or for each. Returns it (remove() uninstalls it).
    Modules imported already are not looked at."""
    hook = _Hook(names, callback, once=once)
    _insert(hook)
    return hook


def after_each_import_under(package: str, callback) -> _Hook:
    """Installs a hook that calls callback(name) after each import of a submodule of `package`."""
    hook = _Hook((), callback, prefix=package, once=False)
    _insert(hook)
    return hook


def _insert(hook: _Hook) -> None:
    """Puts `hook` just before the stdlib's PathFinder, which finds every module corral watches, not first:
    a program that put its own finder first (sys.meta_path.insert(0, f)) and takes sys.meta_path[0] off
    again later must get its own back, also when a hook was installed in between (the patch's, entered at
    the program's first pool import)."""
    for index, finder in enumerate(sys.meta_path):
        if getattr(finder, "__name__", None) == "PathFinder" and \
                getattr(finder, "__module__", None) == "_frozen_importlib_external":
            sys.meta_path.insert(index, hook)
            return
    sys.meta_path.insert(0, hook)


def initializing(name: str) -> bool:
    """Whether module `name` is in sys.modules with its code still running (an import in progress)."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    return module is not None and bool(getattr(spec, "_initializing", False))
