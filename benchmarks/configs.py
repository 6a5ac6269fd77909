"""The configurations a workload runs under, side by side: how each one launches a workload script, or
why it cannot. Which peers exist is found out at run time (corral's pools and runner are built in
parallel with this harness), so a column appears by itself once its tool works, and until then says why.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
from pathlib import Path

from workload_specs import BLAS_THREAD_VARS, SIDE_BY_SIDE, Setting, Workload

PROBE_MARKER = "corral-bench-probe-ok"

# Variables that change what a run does: removed from the inherited environment so that "plain" means
# library defaults whatever shell started the harness (W3 and the hand-tuned grid set their own).
CONTROLLED_VARS = BLAS_THREAD_VARS + ("NUMBA_NUM_THREADS", "PYTHON_CPU_COUNT", "LOKY_MAX_CPU_COUNT")


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    label: str
    description: str


CONFIGS: list[Config] = [
    Config("plain", "plain", "the unmodified script with library defaults"),
    Config("hand-tuned", "hand-tuned", "best point of a grid over pool sizes and BLAS threads (env vars)"),
    Config("threadpoolctl", "threadpoolctl", "`with threadpool_limits(1):` around the pool"),
    Config("tbb4py", "tbb4py", "`python -m tbb script.py` (TBB pool for multiprocessing.pool.ThreadPool)"),
    Config("joblib-threading", "joblib threading", "Parallel(n_jobs, backend='threading')(delayed(f)(x) ...)"),
    Config("joblib-loky", "joblib loky", "Parallel(n_jobs, backend='loky')(delayed(f)(x) ...)"),
    Config("corral", "corral", "`python -m corral script.py` (dynamic mode)"),
    Config("corral-static", "corral static", "`python -m corral --mode static script.py`"),
    Config("corral-api", "corral API", "the script using corral.ThreadPool / ThreadPoolExecutor / Pool "
                                       "(W10: corral.dask's worker plugin)"),
    Config("corral-share", "corral share", "programs side by side in one machine share, "
           "`python -m corral --share NAME script.py` (W9)"),
]
CONFIG_NAMES = [c.name for c in CONFIGS]

# Which corral class a workload uses under `--impl corral`.
CORRAL_API_CLASS = {"W4": "Pool", "W7": "ThreadPoolExecutor", "W8": "ThreadPoolExecutor", "W10": "dask"}


@dataclasses.dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]

    def command_line(self, base_env: dict[str, str]) -> str:
        """The command as a person would type it (only the variables this launch adds)."""
        added = {k: v for k, v in self.env.items() if base_env.get(k) != v}
        blas = {added.get(name) for name in BLAS_THREAD_VARS}
        extra = []
        if len(blas) == 1 and None not in blas:  # the hand-tuned grid sets them all alike: say it once
            value = blas.pop()
            short = "/".join(n.removesuffix("_NUM_THREADS") for n in BLAS_THREAD_VARS if n.endswith("_NUM_THREADS"))
            extra.append(f"{short}_NUM_THREADS={value} VECLIB_MAXIMUM_THREADS={value}")
            added = {k: v for k, v in added.items() if k not in BLAS_THREAD_VARS}
        extra += [f"{k}={v}" for k, v in sorted(added.items())]
        argv = [Path(a).name if a.endswith(".py") else a for a in self.argv]
        argv[0] = "python"
        return " ".join(extra + argv)


def base_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CONTROLLED_VARS and not k.startswith("CORRAL_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _probe_error(argv: list[str], cwd: str, timeout_s: float) -> str | None:
    """None when argv runs the probe script (or code) successfully, else the reason in one line."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=base_environment(), cwd=cwd)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout_s:g} s"
    except OSError as error:
        return str(error)
    if out.returncode == 0 and PROBE_MARKER in out.stdout:
        return None
    return last_line(out.stderr or out.stdout)


def runner_error(python: str, runner_args: list[str], timeout_s: float = 60.0) -> str | None:
    """Whether `python <runner_args> script.py` runs a script (e.g. ["-m", "corral"]): None, or why not."""
    with tempfile.TemporaryDirectory(prefix="corral-bench-probe-") as tmp:
        script = Path(tmp) / "probe.py"
        script.write_text(f"print({PROBE_MARKER!r})\n")
        return _probe_error([python, *runner_args, str(script)], tmp, timeout_s)


def probe(python: str, timeout_s: float = 60.0) -> dict[str, str | None]:
    """For each configuration that needs a tool: None when it works here, else why not."""
    reasons: dict[str, str | None] = {}

    def imports(statement: str) -> str | None:
        return _probe_error([python, "-c", f"{statement}; print({PROBE_MARKER!r})"], tempfile.gettempdir(), timeout_s)

    for module in ("threadpoolctl", "joblib"):
        error = imports(f"import {module}")
        reasons[module] = None if error is None else f"{module} is not installed ({error})"
    reasons["joblib-threading"] = reasons["joblib-loky"] = reasons.pop("joblib")

    error = runner_error(python, ["-m", "tbb"], timeout_s)
    reasons["tbb4py"] = None if error is None else f"`python -m tbb` fails here: {error}"
    error = runner_error(python, ["-m", "corral"], timeout_s)
    reasons["corral"] = None if error is None else (
        f"corral runner not available in this build (`python -m corral script.py`: {error})")
    error = runner_error(python, ["-m", "corral", "--mode", "static"], timeout_s)
    reasons["corral-static"] = None if error is None else (
        f"corral static mode not available in this build (`python -m corral --mode static script.py`: {error})")
    for cls in sorted(set(CORRAL_API_CLASS.values()) | {"ThreadPool"}):
        # corral.dask is a module (its plugin), the rest are names of the package
        error = imports(f"import corral.{cls}" if cls.islower() else f"import corral; corral.{cls}")
        reasons[f"corral.{cls}"] = None if error is None else f"corral.{cls} not available in this build"
    return reasons


def _flatten(args: dict[str, object]) -> list[str]:
    argv = []
    for name, value in args.items():
        argv += [name, str(value)]
    return argv


def plan(config: str, workload: Workload, python: str, args: dict[str, object], budget: int,
         reasons: dict[str, str | None], tuned: Setting | None = None) -> Launch | str:
    """How `config` runs `workload`, or why it cannot (a string). For "hand-tuned", `tuned` is the grid point."""
    if config in workload.not_applicable:
        return workload.not_applicable[config]
    script = str(workload.path)
    env = base_environment()
    env.update(workload.env(budget))
    argv = _flatten(args)
    if workload.driver_args:  # W9 starts its programs itself, each as the configuration says
        if config not in workload.driver_args:
            return SIDE_BY_SIDE
        if config != "plain" and reasons.get("corral"):
            return reasons["corral"]
        return Launch([python, script, *workload.driver_args[config], *argv], env)
    if config == "corral-share":
        return "one program alone: a machine share is for programs side by side (W9)"
    if config == "plain":
        return Launch([python, script, *argv], env)
    if config == "hand-tuned":
        if tuned is None:
            return "no grid point ran successfully"
        merged = dict(args)
        merged.update(dict(tuned.args))
        if tuned.blas_threads is not None:
            env.update({name: str(tuned.blas_threads) for name in BLAS_THREAD_VARS})
        return Launch([python, script, *_flatten(merged)], env)
    if config in ("threadpoolctl", "joblib-threading", "joblib-loky"):
        if reasons.get(config):
            return reasons[config]
        return Launch([python, script, "--impl", config, *argv], env)
    if config == "tbb4py":
        return reasons["tbb4py"] or Launch([python, "-m", "tbb", script, *argv], env)
    if config == "corral":
        return reasons["corral"] or Launch([python, "-m", "corral", *workload.corral_options, script, *argv], env)
    if config == "corral-static":
        return reasons["corral-static"] or Launch(
            [python, "-m", "corral", "--mode", "static", *workload.corral_options, script, *argv], env)
    if config == "corral-api":
        cls = CORRAL_API_CLASS.get(workload.family, "ThreadPool")
        return reasons.get(f"corral.{cls}") or Launch([python, script, "--impl", "corral", *argv], env)
    raise ValueError(f"unknown configuration {config!r}; choose from {', '.join(CONFIG_NAMES)}")
