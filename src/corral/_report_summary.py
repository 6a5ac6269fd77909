"""The report's figures, computed from one run's samples, and the terminal summary (docs/report.md).

Definitions (each figure's source is in docs/report.md, "What the figures mean"):
- runnable: threads in state R (on a CPU or waiting for one) at a sample, every process of the tree;
- oversubscribed: a sample whose runnable count is above the budget; "by how much": the mean of
  runnable / budget over those samples;
- CPU-wait share: the threads' time waiting on a run queue / (that + their time on a CPU), schedstat;
- the likely gain (plain): the oversubscribed intervals' wall time shortened by their CPU-wait share
  (see estimate()).
"""

from __future__ import annotations

import re

# Samples' runnable threads are attributed to these groups, from the probe's thread names.
MAIN = "main thread"
NATIVE = "other threads (BLAS/OpenMP, C)"
HANDLERS = "ThreadPool handler threads"
CHILDREN = "child processes"


def thread_group(name: str) -> str:
    """A pool's threads share a group: ThreadPoolExecutor-0_3 -> ThreadPoolExecutor-0, and
    multiprocessing.pool.ThreadPool's "Thread-7 (worker)" -> "ThreadPool workers (worker)"."""
    if name == "MainThread":
        return MAIN
    m = re.fullmatch(r"(.*)_\d+", name)
    if m:
        return m.group(1)
    m = re.fullmatch(r"Thread-\d+ \((.+)\)", name)
    if m:
        if m.group(1) == "worker":
            return "ThreadPool workers"
        if m.group(1).startswith("_handle_"):  # multiprocessing.pool's task, result and worker handlers
            return HANDLERS
        return f"threads running {m.group(1)}"
    return re.sub(r"\d+", "*", name)


def _share(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def _percentile(values: list[int], q: float) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def estimate(samples: dict, budget: int, wall: float) -> dict:
    """What removing the oversubscription would likely save: each interval between two samples whose
    runnable count is above the budget loses the share of it its threads spent waiting for a CPU.

    The model: threads that wait for a CPU while their partners run stall them (BLAS/OpenMP threads
    meet at barriers and spin), so oversubscribed time is stretched by the wait share. It is an
    upper bound for independent work (threads that never meet lose nothing to waiting: the CPUs stay
    busy), and a lower bound where spinning threads burn CPU time themselves."""
    t, run, wait, runnable = samples["t"], samples["run_s"], samples["wait_s"], samples["runnable"]
    over_time = over_run = over_wait = 0.0
    for i in range(1, len(t)):
        if runnable[i] > budget:
            over_time += t[i] - t[i - 1]
            over_run += run[i] - run[i - 1]
            over_wait += wait[i] - wait[i - 1]
    share = over_wait / (over_run + over_wait) if over_run + over_wait > 0 else 0.0
    saved = over_time * share
    return {"oversubscribed_s": over_time, "wait_share_oversubscribed": share, "saved_s": saved,
            "estimated_wall_s": max(wall - saved, 0.0), "speedup": wall / (wall - saved) if wall > saved else 1.0}


def figures(run: dict, budget: int) -> dict:
    """The summary's figures for one run (a run dict of the JSON report, docs/report.md)."""
    s = run["samples"]
    runnable = s["runnable"]
    over = [r > budget for r in runnable]
    over_ratio = [r / budget for r in runnable if r > budget]
    run_s = s["run_s"][-1] if s["run_s"] else 0.0
    wait_s = s["wait_s"][-1] if s["wait_s"] else 0.0
    groups = {name: sum(counts) / len(counts) for name, counts in run["runnable_by_group"].items() if counts}
    libraries: dict[str, dict] = {}
    for change in run["libraries"]:
        for library, threads, filename in change["libs"]:
            entry = libraries.setdefault(filename, {"library": library, "max_threads": threads, "threads": []})
            entry["max_threads"] = max(entry["max_threads"], threads)
            if threads not in entry["threads"]:
                entry["threads"].append(threads)
    for p in run["processes"]:
        for filename in p.get("libraries", []):
            libraries.setdefault(filename, {"library": filename.split(".")[0].removeprefix("lib"),
                                            "max_threads": None, "threads": []})
    permits = run["permits"]
    pools = None
    if permits:
        # A task back from a pause waits for a permit as a holder: counted once ("returning" is absent
        # from reports written before it was recorded).
        pools = {"max_in_flight": max(p["holders"] + p["waiting"] - p.get("returning", 0) for p in permits),
                 "max_running": max(p["held"] for p in permits),
                 "max_waiting_for_permit": max(p["waiting"] for p in permits),
                 "overdrafts": permits[-1]["overdrafts"]}
    wall = run["wall_s"]
    out = {
        "samples": len(runnable),
        "wall_s": wall,
        "cpu_s": run["cpu_s"],
        "cpus_used": run["cpu_s"] / wall if wall > 0 else 0.0,
        "runnable_mean": sum(runnable) / len(runnable) if runnable else 0.0,
        "runnable_p95": _percentile(runnable, 0.95),
        "runnable_max": max(runnable, default=0),
        "oversubscribed_share": _share(over),
        "oversubscribed_by": sum(over_ratio) / len(over_ratio) if over_ratio else 0.0,
        "cpu_wait_share": wait_s / (run_s + wait_s) if run_s + wait_s > 0 else 0.0,
        "busiest": sorted(groups.items(), key=lambda kv: -kv[1]),
        "libraries": libraries,
        "pools": pools,
    }
    if run["mode"] == "plain":
        out["estimate"] = estimate(s, budget, wall)
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def advice(run: dict, f: dict, budget: int) -> list[str]:
    """What corral would change in a plain run, from what the probe saw."""
    lines = []
    sizes = run.get("threads_by_group", {})
    pools = [(name, sizes.get(name, 0)) for name, mean in f["busiest"]
             if name not in (MAIN, NATIVE, CHILDREN, HANDLERS)]
    named = ", ".join(f"{name} of {size} threads" if size else name for name, size in pools)
    blas = {name: e for name, e in f["libraries"].items() if e["max_threads"]}
    widest = max((e["max_threads"] for e in blas.values()), default=1)
    if pools and widest > 1:
        lines.append(f"thread pools ({named}) call libraries of up to {widest} threads each: corral runs about "
                     f"{budget} task(s) at a time and gives each max(1, {budget} // tasks running) BLAS/OpenMP "
                     "threads")
    elif pools and sum(size for _, size in pools) > budget:
        lines.append(f"thread pools ({named}): corral runs about {budget} task(s) at a time; tasks that wait "
                     "give their permit away")
    elif widest > budget:
        lines.append(f"libraries run up to {widest} threads on a budget of {budget}: corral caps them at the budget")
    if any(p["pid"] != run["pid"] for p in run["processes"]):
        lines.append("child processes: corral's process pools give each worker its own share of the CPUs")
    return lines or ["nothing: no corral pool or BLAS/OpenMP library to act on was seen"]


def format_run(run: dict, budget: int) -> list[str]:
    f = run["figures"]
    mode = "plain python" if run["mode"] == "plain" else "python -m corral"
    ex = run["exit"]
    ending = f"killed by {ex['signal']}" if ex["signal"] else f"exit status {ex['status']}"
    lines = [f"{mode}: {f['wall_s']:.2f} s wall, {f['cpu_s']:.2f} s CPU ({f['cpus_used']:.2f} CPUs busy on average), "
             f"{ending}",
             f"  threads runnable: mean {f['runnable_mean']:.1f}, 95th percentile {f['runnable_p95']}, "
             f"max {f['runnable_max']} (budget {budget}; {f['samples']} samples)"]
    if f["oversubscribed_share"] > 0:
        lines.append(f"  oversubscribed {_pct(f['oversubscribed_share'])} of the run, by {f['oversubscribed_by']:.1f}x "
                     "the budget on average")
    else:
        lines.append("  never oversubscribed")
    lines.append(f"  CPU-wait share {_pct(f['cpu_wait_share'])}: of the time threads wanted a CPU, they waited "
                 "for one this much")
    busy = [f"{name} {mean:.1f}" for name, mean in f["busiest"] if mean >= 0.05][:4]
    if busy:
        lines.append(f"  busiest (mean runnable threads): {', '.join(busy)}")
    for filename, e in sorted(f["libraries"].items()):
        threads = "/".join(map(str, e["threads"])) if e["threads"] else "count unknown (another process)"
        lines.append(f"  library {e['library']} ({filename}): threads {threads}")
    if f["pools"] and f["pools"]["max_in_flight"]:
        p = f["pools"]
        lines.append(f"  corral pools: up to {p['max_in_flight']} tasks in flight, {p['max_running']} running, "
                     f"{p['max_waiting_for_permit']} waiting for a permit; {p['overdrafts']} overdrafts")
    if run["mode"] == "plain":
        e = f["estimate"]
        for line in advice(run, f, budget):
            lines.append(f"  corral would change: {line}")
        if e["saved_s"] > 0.005:
            lines.append(f"  likely gain: about {e['speedup']:.1f}x ({f['wall_s']:.2f} s -> "
                         f"{e['estimated_wall_s']:.2f} s): the {e['oversubscribed_s']:.2f} s oversubscribed, less "
                         f"their {_pct(e['wait_share_oversubscribed'])} spent waiting for a CPU (docs/report.md)")
        else:
            lines.append("  likely gain: none to speak of (no time lost waiting for a CPU while oversubscribed)")
    return lines


def format_text(report: dict) -> str:
    budget = report["budget"]
    lines = [f"corral report: budget {budget} CPUs ({report['decided_by']}), sampled every "
             f"{report['interval_ms']:g} ms"]
    for run in report["runs"]:
        lines += format_run(run, budget)
    if len(report["runs"]) == 2:
        plain, under = (r["figures"]["wall_s"] for r in report["runs"])
        if under > 0:
            lines.append(f"corral against plain: {plain / under:.2f}x ({plain:.2f} s -> {under:.2f} s)")
    return "\n".join(lines)
