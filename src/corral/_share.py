"""Machine-wide permits: a share joined by name, or GNU make's jobserver (docs/share.md; the C++ is
cpp/include/corral/{permit_source,machine_share,jobserver}.hpp).

share(name, size): corral.share, the public API.
check_name(name), parse_size(text): the runner's and the environment's validation (ValueError, one line).
source(): the process's source as one line, or None (joins what the environment names on first use).
status(names): what `info` shows of the shares, without joining them.
"""

from __future__ import annotations

import atexit
import os

from . import _core

DEFAULT_NAME: str = _core.SHARE_DEFAULT_NAME
MAX_SIZE: int = _core.SHARE_MAX_SIZE
ENV_NAME = "CORRAL_SHARE"
ENV_SIZE = "CORRAL_SHARE_SIZE"
_leave_registered = False
TREE_PREFIX = "tree-"  # the runner's private share for a program and its children (docs/share.md)


def check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"corral: a share name is a str, got {type(name).__name__}")
    _core.check_share_name(name)
    return name


def check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"corral: a share's size is an int, got {type(size).__name__}")
    if not 1 <= size <= MAX_SIZE:
        raise ValueError(f"corral: a share's size is 1 to {MAX_SIZE} permits, got {size}")
    return size


def parse_size(text: str) -> int:
    """--share-size and CORRAL_SHARE_SIZE: a decimal count of permits."""
    try:
        value = int(text, 10)
    except ValueError:
        raise ValueError(f"corral: a share's size is a number of permits from 1 to {MAX_SIZE}, got {text!r}") from None
    return check_size(value)


def share(name: str = DEFAULT_NAME, size: int | None = None) -> None:
    """Join the machine share `name`: from now on this process's permits beyond its first are drawn
    from one pool that every corral process of this user in the same share draws from (docs/share.md).

    name: 1 to 64 of A-Z a-z 0-9 _ . - without a leading dot ("default" unless given).
    size: the share's permits (CPUs that its members may keep busy together), 1 to 65536; None: the
        creator's CPU budget (corral.budget().cpus). A share that exists keeps its creator's size.
    Sets CORRAL_SHARE (and CORRAL_SHARE_SIZE) in os.environ, so that child processes join it too.
    The process leaves it at interpreter exit (the last member removes its file).
    Joining the share this process is in already does nothing; joining another leaves the first.
    A process keeps one permit of its own whatever the share holds (as make gives each job one).
    Errors: TypeError and ValueError for a bad name or size; PermissionError (an OSError) when the
    share's directory or file is not private to this user (owned by another, open to group or
    others, a symbolic link); OSError when it cannot be made. Returns None.
    """
    check_name(name)
    if size is not None:
        check_size(size)
    _core.join_share(name, size or 0)
    global _leave_registered
    if not _leave_registered:
        # Also where Ctrl-C ends the program by a re-raised SIGINT after Python's exit handlers, which
        # skips the C runtime's: the last member still removes the file.
        atexit.register(_core.leave_share)
        _leave_registered = True
    os.environ[ENV_NAME] = name
    if size is None:
        os.environ.pop(ENV_SIZE, None)
    else:
        os.environ[ENV_SIZE] = str(size)


def join_tree(size: int) -> str:
    """The runner: a machine share private to this program and the processes it starts (they inherit
    CORRAL_SHARE), sized to the program's budget, so that the tree runs on that budget together.
    Returns its name. OSError when it cannot be made (the caller goes on without it)."""
    name = f"{TREE_PREFIX}{os.getpid()}"
    _remove_stale_trees(name)
    share(name, check_size(min(size, MAX_SIZE)))
    return name


def _remove_stale_trees(mine: str) -> None:
    # A tree whose last member died without its exit path (SIGTERM, SIGKILL, os._exit) leaves its file:
    # harmless (no lock is held), but each run makes one, so each run removes those no member holds
    # (inspect() takes the share's guard: a tree being joined right now is never taken for stale).
    # (try/except, not contextlib.suppress: `import corral` at every child's start need not import contextlib)
    try:
        names = _core.share_names()
    except OSError:
        return
    for name in names:
        if name.startswith(TREE_PREFIX) and name != mine:
            try:
                _core.share_status(name)
            except (OSError, ValueError):
                pass


def is_tree(name: str | None) -> bool:
    return bool(name) and name.startswith(TREE_PREFIX)


def source() -> str | None:
    """The process's machine-wide source as one line (joining CORRAL_SHARE or make's jobserver on first
    use), or None. ValueError/OSError as share()."""
    return _core.permit_source()


def source_note() -> str:
    """Why a jobserver named in MAKEFLAGS was not used, or ''."""
    return _core.permit_source_note()


def status(names: list[str] | None = None) -> dict:
    """{"directory", "shares": [share_status dicts], "jobserver": what MAKEFLAGS names}, without joining.
    names None: every share in the directory. OSError when the directory is not private."""
    directory = _core.share_directory()
    wanted = _core.share_names() if names is None else names
    shares = []
    for name in wanted:
        found = _core.share_status(name)
        shares.append(found if found is not None else {"name": name, "missing": True})
    jobserver = _core.parse_makeflags(os.environ.get("MAKEFLAGS", ""))
    return {"directory": directory, "shares": shares, "jobserver": jobserver}
