"""What machine a benchmark ran on: CPU model, CPUs, the CPU budget, Python, numpy and BLAS versions.

The budget here is the harness's own reading (affinity capped by the cgroup CPU quota), so that results
name the machine even when corral is not built; `python -m corral info` is recorded beside it when
it exists.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cgroup_quota_cpus() -> tuple[float | None, str]:
    """The tightest CPU quota of this process's cgroup and its ancestors (v2 cpu.max, v1 cfs quota)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None, "no /proc/self/cgroup"
    best: tuple[float | None, str] = (None, "no cgroup CPU quota")
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and controllers == "":
            candidates = [(CGROUP_ROOT, "cpu.max")]
        elif "cpu" in controllers.split(","):
            candidates = [(CGROUP_ROOT / name, "cpu.cfs_quota_us") for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu")]
        else:
            continue
        for root, filename in candidates:
            directory = root / path.lstrip("/")
            while True:
                quota = _read_quota(directory, filename)
                if quota is not None and (best[0] is None or quota < best[0]):
                    best = (quota, f"{directory / filename}")
                if directory == root or root not in directory.parents:
                    break
                directory = directory.parent
    return best


def _read_quota(directory: Path, filename: str) -> float | None:
    try:
        if filename == "cpu.max":
            quota, period = (directory / filename).read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota = int((directory / filename).read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def budget() -> tuple[int, str]:
    """CPUs this process may use: affinity, capped by the cgroup quota (rounded up), and where it came from."""
    cpus = affinity_cpus()
    quota, source = cgroup_quota_cpus()
    if quota is not None and math.ceil(quota) < cpus:
        return max(1, math.ceil(quota)), f"cgroup quota {quota:g} CPUs ({source})"
    return cpus, "affinity mask" + ("" if quota is None else f" (quota {quota:g} CPUs is looser)")


def libraries(python: str) -> dict:
    """numpy and the BLAS/OpenMP libraries it loads, read in a fresh interpreter with default settings."""
    code = (
        "import json, sys, numpy, threadpoolctl\n"
        "info = threadpoolctl.threadpool_info()\n"
        "print(json.dumps({'python': sys.version.split()[0], 'numpy': numpy.__version__,"
        " 'threadpoolctl': threadpoolctl.__version__, 'blas': [{k: i.get(k) for k in"
        " ('internal_api', 'version', 'threading_layer', 'num_threads', 'architecture', 'prefix')}"
        " for i in info]}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, env=env, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as error:
        return {"python": sys.version.split()[0], "error": f"could not read numpy/BLAS: {error}"}


def corral_info(python: str) -> str | None:
    """`python -m corral info` (written by the corral CLI), or None where it does not exist yet."""
    try:
        out = subprocess.run([python, "-m", "corral", "info"], capture_output=True, text=True, timeout=60)
    except (subprocess.SubprocessError, OSError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def describe(python: str = sys.executable) -> dict:
    cpus, source = budget()
    libs = libraries(python)
    return {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count() or 1,
        "affinity_cpus": affinity_cpus(),
        "budget": cpus,
        "budget_source": source,
        "platform": platform.platform(),
        **libs,
        "corral_info": corral_info(python),
    }


def summary_line(machine: dict) -> str:
    blas = ", ".join(
        f"{b.get('internal_api')} {b.get('version')} ({b.get('threading_layer')}, {b.get('num_threads')} threads)"
        for b in machine.get("blas", [])
    ) or machine.get("error", "BLAS unknown")
    return (
        f"{machine['cpu_model']}, {machine['logical_cpus']} logical CPUs, budget {machine['budget']} "
        f"({machine['budget_source']}); Python {machine.get('python')}, numpy {machine.get('numpy')}, BLAS {blas}"
    )


def file_stem(machine: dict) -> str:
    """Per-machine name for result files, so runs on different machines sit side by side."""
    host = re.sub(r"[^A-Za-z0-9_.-]+", "-", machine["hostname"]).strip("-") or "host"
    return f"{machine['logical_cpus']}cpu-{host}"


if __name__ == "__main__":
    info = describe()
    print(summary_line(info))
    print(json.dumps(info, indent=2))
