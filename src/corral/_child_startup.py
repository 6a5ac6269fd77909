"""Imported by corral-children.pth at interpreter startup when CORRAL_CHILDREN is set (_children.py).

It runs inside site.py, before the child's own code: an exception here would be printed by site with a
traceback and the child would run without corral; a SystemExit would abort the interpreter. So a bad
CORRAL_CHILDREN or CORRAL_CPUS is one line on stderr and exit 2 (as the runner refuses them), and
nothing else is raised.
"""

from __future__ import annotations

import os
import sys

from . import _children


def _start() -> None:
    try:
        _children.start_in_child()
    except ValueError as exc:
        sys.stderr.write(f"corral: {exc}\n")
        sys.stderr.flush()
        os._exit(2)


_start()
