"""Writes a benchmark run out: all raw numbers as JSON, a markdown table, a PNG plot, the latest pointer.

Every table and plot names the machine. A configuration that did not run a workload appears with the
reason, never silently left out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import machine as machine_info
import targets as issue_targets


def write_all(results: dict, out_dir: Path, stem: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md"}
    _write_atomically(paths["json"], json.dumps(results, indent=1, default=str) + "\n")
    png = out_dir / f"{stem}.png"
    plot_error = plot(results, png)
    if plot_error is None:
        paths["png"] = png
    else:
        results.setdefault("notes", []).append(f"no plot: {plot_error}")
    targets_png = out_dir / f"{stem}-targets.png"
    if plot_error is None and plot_targets(results, targets_png) is None:
        paths["targets_png"] = targets_png
    text = markdown(results, png_name=png.name if plot_error is None else None, json_name=paths["json"].name,
                    targets_png_name=targets_png.name if "targets_png" in paths else None)
    _write_atomically(paths["md"], text)
    latest = out_dir / ("latest-quick.md" if results["settings"]["quick"] else "latest.md")
    _write_atomically(latest, f"Latest run: [{paths['md'].name}]({paths['md'].name})\n\n" + text)
    paths["latest"] = latest
    return paths


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def format_value(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"
    if unit == "tasks/s":
        return f"{value:,.0f}/s" if value >= 100 else f"{value:.3g}/s"
    return f"{value:.4g} {unit}"


def format_ratio(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.2f}×"


class Notes:
    """Numbered footnotes, one per distinct reason, so a wide table stays readable."""

    def __init__(self):
        self.reasons: list[str] = []

    def ref(self, reason: str) -> str:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"[{self.reasons.index(reason) + 1}]"

    def render(self) -> str:
        return "\n".join(f"{i + 1}. {reason}" for i, reason in enumerate(self.reasons))


def _cut(results: dict) -> str:
    """Which workloads the time budget cut to fewer repetitions."""
    wanted = results["settings"]["reps"]
    cut = [f"{w['id']}: {w['reps']}" for w in results["workloads"].values()
           if w.get("reps", wanted) < w.get("wanted_reps", wanted)]
    capped = sorted({w["wanted_reps"] for w in results["workloads"].values() if w.get("wanted_reps", wanted) < wanted})
    capped_text = f"; the real-library workloads at most {', '.join(map(str, capped))}" if capped else ""
    if not cut:
        return capped_text
    return f"{capped_text} (fewer to fit the time budget: {', '.join(cut)})"


def _cell(row: dict, unit: str, notes: Notes) -> str:
    if "summary" in row:
        ratio = row.get("vs_plain")
        text = format_value(row["summary"]["median"], unit)
        return f"{text} ({format_ratio(ratio)})" if ratio is not None else text
    label = "n/a" if row["status"] == "n/a" else "failed"
    return f"{label} {notes.ref(row.get('reason', 'unknown'))}"


def target_rows(results: dict) -> list[dict]:
    """Per workload and target: corral's figure against it and whether it is met (issue 12's targets)."""
    rows = []
    for workload in results["workloads"].values():
        best = issue_targets.best_simple_fix(workload["configs"], workload["higher_is_better"])
        for spec in workload.get("targets", []):
            target = issue_targets.Target(**spec)
            figure = issue_targets.figure(workload, target)
            rows.append({"workload": workload, "target": target, "best": best, "figure": figure,
                         "met": None if figure is None else target.met(figure)})
    return rows


def _target_section(results: dict, png_name: str | None) -> list[str]:
    rows = target_rows(results)
    if not rows:
        return []
    met = sum(1 for r in rows if r["met"])
    fixes = [n for n in issue_targets.SIMPLE_FIXES if n in results["configs"]]
    missing = [results["configs"].get(n, {}).get("label", n) for n in issue_targets.SIMPLE_FIXES if n not in fixes]
    ran = ", ".join(results["configs"][n]["label"] for n in fixes) or "none"
    lines = ["", "## corral against the simplest fix (issue 12's targets)", "",
             f"corral (`python -m corral`) against the best of the simple fixes this run measured ({ran}) in the "
             f"same run (or against plain, or W6's ideal, where the target says so); above 1× corral is ahead. "
             + (f"Not run here, so not compared: {', '.join(missing)}. " if missing else "")
             + f"Targets met: {met} of {len(rows)}.", ""]
    if png_name:
        lines += [f"![corral against the best simple fix]({png_name})", ""]
    lines += ["| workload | best simple fix | corral | corral against it | target | met |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        workload, target, best = r["workload"], r["target"], r["best"]
        unit = workload["unit"]
        corral = workload["configs"].get("corral", {})
        corral_text = format_value(corral["summary"]["median"], unit) if "summary" in corral else corral.get(
            "status", "n/a")
        best_text = f"{format_value(best[1], unit)} ({results['configs'][best[0]]['label']})" if best else "n/a"
        if target.against == "ideal":
            figure = "" if r["figure"] is None else f"{100 * r['figure']:.0f}% of ideal"
            bound = f"≥ {100 * target.at_least:.0f}%"
        else:
            against = {"best_simple_fix": "", "plain": " plain", "hand-tuned": " hand-tuned"}[target.against]
            figure = "" if r["figure"] is None else f"{r['figure']:.2f}×{against}"
            bound = f"{'>' if target.strictly else '≥'} {target.at_least:.2f}×"
        verdict = "n/a" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(f"| {workload['id']} {workload['title']} | {best_text} | {corral_text} | {figure} | "
                     f"{target.label} ({bound}) | {verdict} |")
    return lines


def markdown(results: dict, png_name: str | None = None, json_name: str | None = None,
             targets_png_name: str | None = None) -> str:
    machine = results["machine"]
    settings = results["settings"]
    config_names = settings["configs"]
    labels = {name: results["configs"][name]["label"] for name in config_names}
    workloads = results["workloads"]
    notes = Notes()
    mode = "quick mode (small sizes: proves the harness, not the speed)" if settings["quick"] else "full mode"
    lines = [
        f"# corral Python benchmarks: {machine_info.file_stem(machine)}",
        "",
        f"**Machine:** {machine_info.summary_line(machine)}.",
        "",
        f"**Run:** {mode}; {settings['reps']} repetition(s) per configuration{_cut(results)}, interleaved "
        f"round-robin (rotating order); hand-tuning grid {settings['tune_reps']} run(s) per point; started "
        f"{settings['started']}; wall time {results.get('wall_s', 0):.0f} s"
        + (f" (time budget {settings['time_budget_s']:.0f} s)" if settings.get("time_budget_s") else "") + ".",
    ]
    if json_name:
        lines += ["", f"Raw numbers: [{json_name}]({json_name})."]
    if png_name:
        lines += ["", f"![speedup against plain]({png_name})"]
    lines += [
        "",
        "## Summary",
        "",
        "Each cell: median, then in brackets the speedup against plain (above 1× is better). "
        "W6 and W8 are throughput (tasks/s, higher is better); the others are seconds (lower is better).",
        "",
        "| workload | " + " | ".join(labels[n] for n in config_names) + " |",
        "|---" * (len(config_names) + 1) + "|",
    ]
    for workload in workloads.values():
        cells = [_cell(workload["configs"][n], workload["unit"], notes) for n in config_names]
        lines.append(f"| {workload['id']} {workload['title']} | " + " | ".join(cells) + " |")
    lines += _target_section(results, targets_png_name)

    for workload in workloads.values():
        lines += ["", f"## {workload['id']} {workload['title']}", "",
                  workload["measures"] + f". Repetitions: {workload.get('reps', settings['reps'])}."
                  + (" (A quick run: smaller sizes than described; the commands below are what ran.)"
                     if settings.get("quick") else "")]
        if "calibration" in workload:
            cal = workload["calibration"]
            lines.append(f"Calibrated matmul side n={cal['n']} ({cal['compute_ms']:.2f} ms on one BLAS thread); "
                         f"ideal throughput {workload['ideal']:,.0f} tasks/s (budget cores always computing).")
        tuning = workload.get("tuning")
        if tuning:
            points = "; ".join(
                f"{p['setting']}: " + (format_value(p["median"], workload["unit"]) if p["median"] is not None
                                       else f"failed ({p['error']})")
                for p in tuning["points"])
            lines.append(f"Hand-tuned winner: **{tuning['winner'] or 'none'}** (grid: {points}).")
        extra = "% of ideal | " if "ideal" in workload else ""
        lines += [
            "",
            f"| configuration | median | min – max | IQR | vs plain | vs hand-tuned | {extra}how it ran / why not |",
            "|---|---|---|---|---|---|" + ("---|" if extra else "") + "---|",
        ]
        for name in config_names:
            row = workload["configs"][name]
            if "summary" in row:
                s = row["summary"]
                unit = workload["unit"]
                how = f"`{row['command']}`"
                if row.get("note"):
                    how += f" ({row['note']})"
                cells = [format_value(s["median"], unit),
                         f"{format_value(s['min'], unit)} – {format_value(s['max'], unit)}",
                         f"{format_value(s['q1'], unit)} – {format_value(s['q3'], unit)}",
                         format_ratio(row.get("vs_plain")), format_ratio(row.get("vs_hand_tuned"))]
                if extra:
                    cells.append(f"{100 * row['of_ideal']:.0f}%")
            else:
                cells = [row["status"], "", "", "", ""] + ([""] if extra else [])
                how = row.get("reason", "")
            lines.append(f"| {labels[name]} | " + " | ".join(cells) + f" | {how} |")

    if notes.reasons:
        lines += ["", "## Why some cells are empty", "", notes.render()]
    availability = results.get("availability", {})
    lines += ["", "## Configurations", ""]
    for name in config_names:
        lines.append(f"- **{labels[name]}**: {results['configs'][name]['description']}.")
    if availability:
        lines += ["", "Probed at the start of the run: " + "; ".join(
            f"{name} {'available' if reason is None else 'unavailable'}"
            for name, reason in sorted(availability.items()))
            + "."]
    if machine.get("corral_info"):
        lines += ["", "`python -m corral info`:", "", "```", machine["corral_info"], "```"]
    for note in results.get("notes", []):
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> str | None:
    """Speedup against plain per workload and configuration (log scale, whiskers min to max); None if written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError as error:
        return f"matplotlib is not installed ({error})"

    config_names = results["settings"]["configs"]
    labels = [results["configs"][n]["label"] for n in config_names]
    workloads = list(results["workloads"].values())
    columns = min(3, len(workloads))
    rows = (len(workloads) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 0.42 * len(labels) * rows + 1.6 * rows),
                             squeeze=False)
    for ax in axes.flat[len(workloads):]:
        ax.axis("off")
    for ax, workload in zip(axes.flat, workloads):
        plain = workload["configs"].get("plain", {}).get("summary")
        y = list(range(len(config_names)))
        for i, name in enumerate(config_names):
            row = workload["configs"][name]
            color = "tab:green" if name.startswith("corral") else ("tab:gray" if name == "plain" else "tab:blue")
            if "summary" not in row or plain is None:
                ax.text(1.0, i, "  n/a" if row["status"] == "n/a" else "  failed", va="center", fontsize=8,
                        color="tab:red")
                continue
            s = row["summary"]
            ratio = row["vs_plain"]
            higher = workload["higher_is_better"]
            worst = (s["min"] / plain["median"]) if higher else (plain["median"] / s["max"])
            best = (s["max"] / plain["median"]) if higher else (plain["median"] / s["min"])
            ax.barh(i, ratio - 1.0, left=1.0, color=color, alpha=0.8)  # from 1x: left of it is slower
            ax.errorbar(ratio, i, xerr=[[max(0.0, ratio - worst)], [max(0.0, best - ratio)]], fmt="none",
                        ecolor="black", capsize=2, lw=0.8)
            ax.text(ratio, i, f" {ratio:.2f}×", va="center", fontsize=7)
        ax.axvline(1.0, color="black", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        low, high = ax.get_xlim()
        ax.set_xlim(min(low, 0.5), max(high, 2.0))
        ax.set_yticks(y)
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{workload['id']} {workload['title']}", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel("speedup against plain (log; >1 is better)", fontsize=7)
    machine = results["machine"]
    fig.suptitle(f"corral benchmarks on {machine['cpu_model']}, {machine['logical_cpus']} CPUs, budget "
                 f"{machine['budget']}; Python {machine.get('python')}, numpy {machine.get('numpy')}"
                 + (" (quick mode)" if results["settings"]["quick"] else ""), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def plot_targets(results: dict, path: Path) -> str | None:
    """corral against each workload's target reference (log scale), the target as a tick; None if written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError as error:
        return f"matplotlib is not installed ({error})"
    rows = [r for r in target_rows(results) if r["figure"] is not None and r["target"].against != "ideal"]
    if not rows:
        return "no target could be measured"
    fig, ax = plt.subplots(figsize=(8.5, 0.32 * len(rows) + 1.4))
    for i, r in enumerate(rows):
        color = "tab:green" if r["met"] else "tab:red"
        ax.barh(i, r["figure"] - 1.0, left=1.0, color=color, alpha=0.8)
        ax.plot([r["target"].at_least] * 2, [i - 0.4, i + 0.4], color="black", lw=1.5)
        ax.text(r["figure"], i, f" {r['figure']:.2f}×", va="center", fontsize=7)
    ax.axvline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 1.5, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    low, high = ax.get_xlim()
    ax.set_xlim(min(low, 0.5), max(high, 2.0))
    ax.set_yticks(range(len(rows)))
    against = {"best_simple_fix": "best fix", "plain": "plain", "hand-tuned": "hand-tuned"}
    ax.set_yticklabels([f"{r['workload']['id']} vs {against[r['target'].against]}" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("corral's speedup against the reference (log; black tick: the target; green: met)", fontsize=8)
    machine = results["machine"]
    ax.set_title(f"corral against the best of plain, hand-tuned and threadpool_limits(1)\n{machine['cpu_model']}, "
                 f"budget {machine['budget']}" + (" (quick mode)" if results["settings"]["quick"] else ""),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
