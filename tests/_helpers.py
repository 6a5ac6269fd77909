"""Helpers the tests share (imported as `_helpers`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time


def run_python(args, cwd=None, env=None, timeout=60, check=False, prefix=()) -> subprocess.CompletedProcess:
    """`python *args` in a fresh interpreter (after `prefix`, e.g. taskset), output captured as text. The child
    gets this environment without CORRAL_CPUS, so that its budget is the machine's unless `env` sets one."""
    full_env = {k: v for k, v in os.environ.items() if k != "CORRAL_CPUS"}
    full_env.update(env or {})
    return subprocess.run([*prefix, sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, check=check)


@contextlib.contextmanager
def quota_group(cpus: int = 1):
    """A cgroup v1 cpu group of its own with a quota of `cpus` CPUs (its path), removed afterwards; skips the
    test where there is no root or no writable cgroup v1 cpu controller at /sys/fs/cgroup/cpu. A process joins
    it through `enter_group(path)`."""
    import pytest

    root = "/sys/fs/cgroup/cpu"
    if os.geteuid() != 0 or not os.access(os.path.join(root, "cgroup.procs"), os.W_OK) or \
            not os.path.exists(os.path.join(root, "cpu.cfs_quota_us")):
        pytest.skip("needs root and a writable cgroup v1 cpu controller at /sys/fs/cgroup/cpu")
    group = os.path.join(root, f"corral-test-{os.getpid()}-{os.urandom(4).hex()}")
    os.mkdir(group)
    try:
        with open(os.path.join(group, "cpu.cfs_period_us")) as f:
            period = int(f.read())
        with open(os.path.join(group, "cpu.cfs_quota_us"), "w") as f:
            f.write(str(cpus * period))
        yield group
    finally:
        for _ in range(50):  # the children have exited; the kernel may take a moment to let go
            try:
                os.rmdir(group)
                break
            except OSError:
                time.sleep(0.1)


def enter_group(group: str) -> list[str]:
    """A command prefix that runs what follows inside cgroup `group`."""
    return ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh"]
