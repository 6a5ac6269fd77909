"""after_import(names, callback): callback(name) right after the program's import of any of `names` ran the
module's code, before the import statement binds it. What corral patches on import uses it: the stdlib pools
under the runner (_deferred_patch.py) and libraries corral.patch() reaches once they are imported (_patch.py).

A finder on sys.meta_path by protocol (find_spec), not an importlib.abc.MetaPathFinder: importlib.abc imports
importlib.resources, pathlib and typing (18 ms and 2,800 objects that every full collection of the program
would traverse again). It finds nothing itself: it asks the finders after it for the module and wraps that
module's loader so that the callback follows its execution. An after_import hook fires once, for the first
of its names imported; remove() takes a hook off sys.meta_path.
"""

from __future__ import annotations

import sys


class _Hook:
    def __init__(self, names: frozenset, callback, prefix: str | None = None):
        self.names = names
        self.callback = callback
        self.prefix = prefix  # a package whose every submodule is watched, for as long as the hook is installed

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.names and not (self.prefix and fullname.startswith(self.prefix + ".")):
            return None
        for finder in sys.meta_path:
            if isinstance(finder, _Hook) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        if not self.prefix:
            self.remove()  # once is enough
        spec.loader = _CallbackAfterLoad(loader, self.callback, fullname)
        return spec

    def remove(self) -> None:
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass


class _CallbackAfterLoad:
    """A module loader (by protocol, as _Hook) that runs the callback after the real loader executed the
    module. A module whose code raised is not called back (the import fails as it would anyway)."""

    def __init__(self, loader, callback, name: str):
        self._loader = loader
        self._callback = callback
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        # The import system binds a submodule to its package only once this returns; the callback may
        # reach it through the package (`import concurrent.futures` then concurrent.futures.X), so bind now.
        parent, _, child = self._name.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, module)
        self._callback(self._name)

    def __getattr__(self, name):  # get_source, get_code, is_package...: the real loader's
        return getattr(self._loader, name)


def after_import(names, callback) -> _Hook:
    """Installs a hook that calls callback(name) once, after the first of `names` (full module names) is
    imported; returns it (its remove() uninstalls it). Modules imported already are not looked at."""
    hook = _Hook(frozenset(names), callback)
    sys.meta_path.insert(0, hook)
    return hook


def after_each_import_under(package: str, callback) -> _Hook:
    """Installs a hook that calls callback(name) after each import of a submodule of `package`, until its
    remove()."""
    hook = _Hook(frozenset(), callback, prefix=package)
    sys.meta_path.insert(0, hook)
    return hook


def initializing(name: str) -> bool:
    """Whether module `name` is in sys.modules with its code still running (an import in progress)."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    return module is not None and bool(getattr(spec, "_initializing", False))
