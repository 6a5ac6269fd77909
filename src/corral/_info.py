"""`python -m corral info`: what corral sees in this process (budget, topology, native pools), and the
machine shares of this user (the one CORRAL_SHARE or --share names, else all) without joining them."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from . import _core, _share
from ._cpu_list import format_cpu_list


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MOD",
        help="import MOD first so that the native libraries it loads are shown (repeatable); "
        "numpy is imported by default when installed",
    )
    parser.add_argument("--no-numpy", action="store_true", help="do not import numpy first")


def collect(imports: list[str], import_numpy: bool = True) -> dict:
    """Everything `info` reports, as a JSON-able dict."""
    imported = []
    if import_numpy:
        try:
            importlib.import_module("numpy")
            imported.append("numpy")
        except ImportError:
            pass
    for name in imports:
        importlib.import_module(name)  # ImportError is reported by the caller
        imported.append(name)
    report = _core.budget().to_dict()
    report["native_pools"] = _core.native_pools()
    report["imported"] = imported
    report["corral_version"] = _core.__version__
    named = os.environ.get(_share.ENV_NAME, "")
    report["machine_shares"] = _share.status([named] if named else None)
    return report


def _format_text(report: dict) -> str:
    lines = [f"corral {report['corral_version']}", ""]
    source = report["decided_by"]
    extra = " (above the hardware: emulating a bigger machine)" if report.get("exceeds_hardware") else ""
    lines.append(f"budget: {report['budget']} CPUs, decided by {source}{extra}")
    lines.append(f"cpus:   {format_cpu_list(report['cpus'])}")
    lines.append("sources:")
    for name, src in report["sources"].items():
        value = "no limit" if src.get("cpus") is None else f"{src['cpus']} CPUs"
        where = f" [{src['path']}]" if src.get("path") else ""
        text = src.get("detail", "").removesuffix(": no limit")
        detail = f": {text}" if text and text != "no limit" else ""
        lines.append(f"  {name:34s} {value}{where}{detail}")
    cores = report["cores"]
    smt = sum(1 for c in cores if len(c) > 1)
    lines.append(f"cores:  {len(cores)} physical ({smt} with SMT siblings): "
                 + " ".join("[" + ",".join(map(str, c)) + "]" for c in cores))
    lines.append(f"numa:   {len(report['numa_nodes'])} node(s): "
                 + " ".join("[" + format_cpu_list(n) + "]" for n in report["numa_nodes"]))
    lines.append("")
    imported = ", ".join(report["imported"]) or "nothing"
    pools = report["native_pools"]
    lines.append(f"native thread pools (after importing {imported}): {len(pools) or 'none'}")
    for p in pools:
        lines.append(f"  {p['library']:10s} {p.get('version') or '?':12s} {p['threading_layer']:9s} "
                     f"{p['num_threads']:>3} threads  {p['path']}")
    lines.append("")
    lines.extend(_format_shares(report["machine_shares"]))
    return "\n".join(lines)


def _format_shares(found: dict) -> list[str]:
    lines = []
    shares = found["shares"]
    if not shares:
        lines.append(f"machine shares: none (in {found['directory']})")
    for s in shares:
        if s.get("missing"):
            lines.append(f"machine share '{s['name']}': none yet (made by its first member, in {found['directory']})")
        elif s["stale"]:
            lines.append(f"machine share '{s['name']}': a stale file (its last member was killed), "
                         f"removed: {s['path']}")
        else:
            members = ", ".join(f"pid {m['pid']} holds {m['permits']}" for m in s["members"]) or "none"
            lines.append(f"machine share '{s['name']}': {s['size']} permits, {s['held']} held; {s['path']}")
            lines.append(f"  members ({len(s['members'])}, each with its own first permit besides): {members}")
    job = found["jobserver"]
    if job["kind"] != "none":
        where = job["fifo"] if job["kind"] == "fifo" else f"fds {job['read_fd']},{job['write_fd']}"
        jobs = f", make -j{job['jobs']}" if job["jobs"] else ""
        lines.append(f"make's jobserver in MAKEFLAGS: {job['kind']} {where}{jobs}")
    return lines


def run(args: argparse.Namespace) -> int:
    try:
        report = collect(args.imports, import_numpy=not args.no_numpy)
    except ImportError as exc:
        print(f"corral info: cannot import {exc.name or exc}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a malformed CORRAL_CPUS
        print(f"corral info: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a share directory that is not private
        print(f"corral info: {exc.strerror or exc}", file=sys.stderr)
        return 2
    out = json.dumps(report, indent=2) if args.json else _format_text(report)
    try:
        print(out)
        sys.stdout.flush()
    except BrokenPipeError:  # `info | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
