"""`python -m corral report [options] script.py|-m module|-c code [args]`: run a program (under corral, as
plain python, or both) and show how it used its CPUs (docs/report.md).

The program runs as a child process with this terminal: its output, input and exit status are its own.
This process samples it from outside (_report_sampler.py) and reads what a probe inside it wrote
(_report_probe.py); the summary goes to stderr, the samples to --json, the plots to --html.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from . import _core, _report_html, _report_summary, _runner
from ._thread_limits import CHILDREN_VAR
from ._report_sampler import TreeSampler, libraries_mapped

PROG = "python -m corral report"
SCHEMA = 1
DEFAULT_INTERVAL_MS = 5.0
USAGE = f"{PROG} [options] (script.py | dir | file.zip | - | -m module | -c code) [args ...]"

DESCRIPTION = """\
Run a program and show how it used its CPUs: threads runnable (on a CPU or waiting for one) against
the budget, the time threads waited for a CPU (the kernel's scheduler statistics), CPU time by
process, the BLAS/OpenMP libraries loaded and their thread counts, and corral's permits (tasks in
flight, running, waiting). By default the program runs under corral (as python -m corral runs it);
--plain runs it as plain python with no policy (diagnosis: the summary says what corral would change
and the likely gain); --compare runs it plain, then under corral.

The program's output, input and exit status pass through unchanged; this command exits with the
program's status (ends by the same signal). The summary goes to stderr. SIGINT, SIGTERM and SIGHUP
are passed on to the program (Ctrl-C reaches it from the terminal), and the report of what ran is
still written."""

EPILOG = """\
Sampling: every --interval ms, /proc/<pid>/task/*/{stat,schedstat} of the program and its child
processes (from outside), and inside the program a probe thread that threading.enumerate() does not
list. Its cost at the default interval: docs/report.md ("Overhead"). Under --compare the two runs
share stdin (the second gets what the first left). Options placed before `report`:
`python -m corral -p N report ...` sets the budget (CORRAL_CPUS) of the corral run and the line both
runs are measured against; -p LIST the CPUs both runs may use."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{PROG}: {message} (see {PROG} --help)\n")


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the interval is a number of milliseconds, got {text!r}") from None
    if not 0.5 <= value <= 10000:
        raise argparse.ArgumentTypeError(f"the interval must be between 0.5 and 10000 ms, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, usage=USAGE, description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--plain", action="store_true", help="run as plain python (no corral policy), diagnose only")
    how.add_argument("--compare", action="store_true", help="run plain, then under corral; plots on one time scale")
    parser.add_argument("--interval", type=_interval, default=DEFAULT_INTERVAL_MS, metavar="MS",
                        help=f"sampling interval in milliseconds (default {DEFAULT_INTERVAL_MS:g})")
    parser.add_argument("--json", metavar="FILE", help="write the samples and figures as JSON (schema: docs/report.md)")
    parser.add_argument("--html", metavar="FILE",
                        help="write a self-contained HTML page with the timeline plots (needs matplotlib: "
                             "pip install 'corral[report]')")
    parser.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    parser.add_argument("-m", dest="module", metavar="module", help="run a library module as a script")
    parser.add_argument("-c", dest="code", metavar="code", help="run a program passed in as a string")
    parser.add_argument("target", nargs="?", metavar="script.py | dir | file.zip | -",
                        help="the program to run, as python runs it (-: read from stdin)")
    return parser


_VALUE_OPTIONS = {"--interval", "--json", "--html"}


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(report's options and the target, the program's words after it), as python splits its own."""
    return _runner.split_at_program(argv, _VALUE_OPTIONS)


def _check_output(parser: argparse.ArgumentParser, option: str, path: str | None) -> None:
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        parser.error(f"{option} {path}: cannot write in {folder}")


class _Forwarder:
    """Passes SIGINT/SIGTERM/SIGHUP on to the running program. Ctrl-C at a terminal reaches the whole
    foreground process group, the program included, so SIGINT is passed on only when this process is
    not in the terminal's foreground (a kill aimed at it alone)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.pid = None
        self.received: int | None = None
        self.saved = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def _handle(self, sig, _frame):
        self.received = sig
        if self.pid is None:
            return
        if sig == signal.SIGINT and _in_terminal_foreground():
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def restore(self):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _in_terminal_foreground() -> bool:
    for fd in (0, 1, 2):
        try:
            return os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            continue
    return False


def _run_once(mode: str, program: list[str], interval_ms: float, forwarder: _Forwarder) -> dict:
    probe_fd, probe_path = tempfile.mkstemp(prefix="corral-report-", suffix=".jsonl")
    os.close(probe_fd)
    command = [sys.executable, "-m", "corral._report_probe", probe_path, mode, str(interval_ms / 1000), *program]
    interval = interval_ms / 1000
    start_unix = time.time()
    cpu0 = time.process_time()
    t0 = time.monotonic()
    env = None
    if mode == "plain" and CHILDREN_VAR in os.environ:
        # plain python all the way down: its child Pythons must not join corral either (_children.py)
        env = {k: v for k, v in os.environ.items() if k != CHILDREN_VAR}
    child = subprocess.Popen(command, env=env)
    forwarder.pid = child.pid
    sampler = TreeSampler(child.pid)
    samples = []
    next_tick = t0
    mapped: dict[int, list[str]] = {}
    try:
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            now = time.monotonic()
            if sampler.ignore is None:
                sampler.ignore = _probe_thread(probe_path)
            try:
                sample = sampler.sample(now - t0)
            except Exception as exc:  # a /proc we do not understand: the program runs on, unsampled
                print(f"{PROG}: sampling stopped: {exc!r}", file=sys.stderr)
                pid, status, usage = os.wait4(child.pid, 0)
                break
            if sample is not None:
                samples.append(sample)
                for p in sample.cpu_s:
                    if p != child.pid and p not in mapped:
                        mapped[p] = []
            for p in list(mapped):  # children's libraries, from outside: as they load (cheap: rarely)
                if len(samples) % 50 == 1 and p in sampler.processes:
                    mapped[p] = libraries_mapped(p) or mapped[p]
            # On a fixed grid: a late tick is not made up, so a busy machine samples less, never in bursts.
            next_tick += interval * max(1, int((time.monotonic() - next_tick) / interval) + 1)
            time.sleep(max(0.0, next_tick - time.monotonic()))
    finally:
        wall = time.monotonic() - t0
        sampler_cpu = time.process_time() - cpu0
        forwarder.pid = None
        child.returncode = 0  # reaped by wait4 above; Popen must not wait for it again
        sampler.close()
    probe = _read_probe(probe_path)
    os.unlink(probe_path)
    run = _assemble(mode, command, start_unix, t0, wall, child.pid, status, usage, samples, sampler, mapped, probe)
    run["sampler_cpu_s"] = round(sampler_cpu, 6)  # this process's CPU time while it sampled (docs/report.md)
    return run


def _probe_thread(path: str) -> int | None:
    """The probe thread's id, once the probe has written its first line."""
    try:
        with open(path, "rb") as f:
            line = f.readline()
        return json.loads(line)["probe"]["tid"] if line.endswith(b"\n") else None
    except (OSError, ValueError, KeyError):
        return None


def _read_probe(path: str) -> list[dict]:
    lines = []
    with open(path, "rb") as f:
        for raw in f:
            try:
                lines.append(json.loads(raw))
            except ValueError:  # a line cut short by a kill: the ones before it stand
                break
    return lines


def _assemble(mode, command, start_unix, t0, wall, pid, status, usage, samples, sampler, mapped, probe) -> dict:
    head = next((x["probe"] for x in probe if "probe" in x), {})
    probe_tid = head.get("tid")
    names: list[tuple[float, dict]] = [(x["t"] - t0, x["threads"]) for x in probe if "threads" in x]
    t, runnable, threads, run_s, wait_s = [], [], [], [], []
    by_group: dict[str, list[int]] = {}
    k = 0
    current: dict = {}
    for i, s in enumerate(samples):
        while k < len(names) and names[k][0] <= s.t:
            current = names[k][1]
            k += 1
        tids = [tid for tid in s.runnable if tid != probe_tid]  # (before the sampler knew it)
        t.append(round(s.t, 6))
        runnable.append(len(tids))
        threads.append(s.threads - (probe_tid in s.root_tids))  # counted before the sampler knew it
        run_s.append(round(s.run_s, 6))
        wait_s.append(round(s.wait_s, 6))
        counts: dict[str, int] = {}
        for tid in tids:
            name = current.get(str(tid))
            if tid == pid:  # the main thread (before the probe named it: the interpreter starting)
                group = _report_summary.MAIN
            elif name is not None:
                group = _report_summary.thread_group(name)
            elif tid in sampler.tids_of_root:
                group = _report_summary.NATIVE
            else:
                group = _report_summary.CHILDREN
            counts[group] = counts.get(group, 0) + 1
        for group in counts.keys() - by_group.keys():
            by_group[group] = [0] * i
        for group, series in by_group.items():
            series.append(counts.get(group, 0))
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        ending = {"status": None, "signal": signal.Signals(sig).name, "signum": sig}
    else:
        ending = {"status": os.WEXITSTATUS(status), "signal": None, "signum": None}
    processes = [{"pid": p, "ppid": sampler.parents.get(p), "comm": sampler.commands.get(p, "?"),
                  "cpu_s": round(sampler.cpu_s.get(p, 0.0), 3), "libraries": mapped.get(p, [])}
                 for p in sampler.commands]
    return {
        "mode": mode,
        "command": command,
        "start_unix": start_unix,
        "wall_s": round(wall, 6),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 6),
        "pid": pid,
        "exit": ending,
        "processes": processes,
        "samples": {"t": t, "runnable": runnable, "threads": threads, "run_s": run_s, "wait_s": wait_s},
        "runnable_by_group": by_group,
        "libraries": [{"t": round(x["t"] - t0, 6), "libs": x["libs"]} for x in probe if "libs" in x],
        "permits": [{"t": round(x["t"] - t0, 6), **x["permits"]} for x in probe if "permits" in x],
        "thread_names": names[-1][1] if names else {},
        "threads_by_group": _threads_by_group(names),
        "probe": head,
    }


def _threads_by_group(names: list[tuple[float, dict]]) -> dict[str, int]:
    """The most Python threads each group (a pool, the main thread) had at once: a pool's size."""
    most: dict[str, int] = {}
    for _t, threads in names:
        counts: dict[str, int] = {}
        for name in threads.values():
            group = _report_summary.thread_group(name)
            counts[group] = counts.get(group, 0) + 1
        for group, n in counts.items():
            most[group] = max(most.get(group, 0), n)
    return most


def run(argv: list[str]) -> int:
    own, rest = split_argv(argv)
    parser = build_parser()
    args = parser.parse_args(own)
    _runner.check_one_program(args, parser.error)
    if args.target is not None and args.target != "-" and not os.path.exists(args.target):
        parser.error(f"can't open file {args.target!r}: no such file")
    _check_output(parser, "--json", args.json)
    _check_output(parser, "--html", args.html)
    if args.html:
        missing = _report_html.missing_dependency()
        if missing:
            parser.exit(2, f"{PROG}: --html needs matplotlib ({missing}): pip install 'corral[report]'\n")
    try:
        budget = _core.budget()
    except ValueError as exc:
        parser.exit(2, f"{PROG}: {exc}\n")
    program = (["-m", args.module] if args.module else ["-c", args.code] if args.code else [args.target]) + rest
    modes = ["plain", "corral"] if args.compare else ["plain"] if args.plain else ["corral"]

    forwarder = _Forwarder()
    runs = []
    try:
        for mode in modes:
            runs.append(_run_once(mode, program, args.interval, forwarder))
            if forwarder.received is not None or runs[-1]["exit"]["signal"]:
                break  # interrupted: report what ran, run nothing more
    finally:
        forwarder.restore()
    for r in runs:
        r["figures"] = _report_summary.figures(r, budget.cpus)
    report = {"schema": SCHEMA, "corral_version": _core.__version__, "budget": budget.cpus,
              "decided_by": budget.decided_by, "logical_cpus": len(os.sched_getaffinity(0)),
              "interval_ms": args.interval, "program": program, "runs": runs}
    try:
        _write_outputs(report, args)
    except OSError as exc:  # a full disk, a folder gone meanwhile: say so; the status stays the program's
        print(f"{PROG}: cannot write the report: {exc}", file=sys.stderr)
    except KeyboardInterrupt:  # a second Ctrl-C while the plots are drawn
        print(f"{PROG}: interrupted while writing the report", file=sys.stderr)
    return _ending(runs)


def _write_outputs(report: dict, args: argparse.Namespace) -> None:
    if not args.quiet:
        print(_report_summary.format_text(report), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f)
        if not args.quiet:
            print(f"corral report: samples in {args.json}", file=sys.stderr)
    if args.html:
        _report_html.write(report, args.html)
        if not args.quiet:
            print(f"corral report: plots in {args.html}", file=sys.stderr)


def _ending(runs: list[dict]) -> int:
    """The program's status: the first run that failed (or the last); a signal ends us the same way."""
    failed = [r for r in runs if r["exit"]["signal"] or r["exit"]["status"]]
    ending = (failed or runs)[0]["exit"]
    if ending["signal"]:
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(ending["signum"], signal.SIG_DFL)
        os.kill(os.getpid(), ending["signum"])
        return 128 + ending["signum"]  # a signal we cannot die of (SIGSTOP does not end runs)
    return ending["status"]
