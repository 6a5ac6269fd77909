"""Run by corral-children.pth at interpreter startup when CORRAL_CHILDREN is set (_children.py):
`start(mask)` after the .pth line blocked SIGINT (mask: the signal mask before that).

This runs inside site.py, before the child's own code: an exception here would be printed by site with
a traceback and the child would run without corral; a SystemExit or KeyboardInterrupt would abort the
interpreter ("Fatal Python error: init_import_site", exit 1). So:
- a bad CORRAL_CHILDREN or CORRAL_CPUS is one line on stderr and exit 2 (as the runner refuses them);
- a SIGINT that arrives meanwhile (importing corral takes some milliseconds, and a parent may interrupt its child
  that early) waits, blocked, until the set-up is done, then ends the process by SIGINT, as a
  KeyboardInterrupt at the top of the child's own code would under plain python.
"""

import _signal  # signal's C module (3.11-3.14): signal.py imports enum, 3 ms at every child's start
import os
import sys

from . import _children


def start(mask: set) -> None:
    try:
        if not _children.started():  # site may read the .pth twice (a venv's site-packages, 3.11)
            _children.start_in_child()
    except ValueError as exc:
        sys.stderr.write(f"corral: {exc}\n")
        sys.stderr.flush()
        os._exit(2)
    finally:
        if _signal.SIGINT not in mask and _signal.SIGINT in _signal.sigpending() \
                and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
            _signal.signal(_signal.SIGINT, _signal.SIG_DFL)  # delivered when unblocked below: the process ends
        _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
