"""Helpers the tests share (imported as `_helpers`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys


def run_python(args, cwd=None, env=None, timeout=60, check=False, prefix=()) -> subprocess.CompletedProcess:
    """`python *args` in a fresh interpreter (after `prefix`, e.g. taskset), output captured as text. The child
    gets this environment without CORRAL_CPUS, so that its budget is the machine's unless `env` sets one."""
    full_env = {k: v for k, v in os.environ.items() if k != "CORRAL_CPUS"}
    full_env.update(env or {})
    return subprocess.run([*prefix, sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, check=check)
