"""The report's HTML page: the summary and a timeline per run (threads runnable against the budget, the
libraries' thread counts, corral's permits), plain above corral on one time scale under --compare.
One file, figures embedded as base64 PNG. matplotlib is the optional extra corral[report], imported
only here and only when a page is written."""

from __future__ import annotations

import base64
import html
import io

from . import _report_summary

_COLOURS = {"plain": "#c0392b", "corral": "#2471a3"}


def missing_dependency() -> str | None:
    """None when matplotlib can be imported, else why not (one line)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def _figure(report: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, budget = report["runs"], report["budget"]
    rows = []  # (run, kind) in page order
    for run in runs:
        rows.append((run, "runnable"))
        rows.append((run, "libraries"))
        if run["permits"]:
            rows.append((run, "permits"))
    heights = [3 if kind == "runnable" else 1.6 for _, kind in rows]
    fig, axes = plt.subplots(len(rows), 1, figsize=(13, sum(heights) + 0.4 * len(rows)), sharex=True,
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    axes = axes[:, 0]
    end = max((r["wall_s"] for r in runs), default=1.0)
    groups = []  # one colour per group on every run's plot
    for run in runs:
        for g in sorted(run["runnable_by_group"], key=lambda g: -sum(run["runnable_by_group"][g])):
            if g not in groups:
                groups.append(g)
    colours = dict(zip(groups, _palette(len(groups))))
    top = max([budget] + [max(r["samples"]["runnable"], default=0) for r in runs])  # one y scale for all runs
    for ax, (run, kind) in zip(axes, rows):
        label = "plain python" if run["mode"] == "plain" else "python -m corral"
        colour = _COLOURS[run["mode"]]
        t = run["samples"]["t"]
        if kind == "runnable":
            _runnable(ax, run, t, budget, colour, colours, top)
            ax.set_title(f"{label}: {run['wall_s']:.2f} s", loc="left", fontsize=11, fontweight="bold")
        elif kind == "libraries":
            _libraries(ax, run, run["wall_s"])
        else:
            _permits(ax, run, run["wall_s"])
        ax.grid(True, axis="both", alpha=0.3)
        ax.set_xlim(0, end * 1.01)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axes[-1].set_xlabel("time since the program started (s)")
    fig.tight_layout()
    return fig, plt


def _runnable(ax, run: dict, t: list, budget: int, colour: str, colours: dict, top: int) -> None:
    groups = run["runnable_by_group"]
    order = sorted(groups, key=lambda g: -sum(groups[g]))
    if t and order:
        ax.stackplot(t, *[groups[g] for g in order], labels=[f"runnable: {g}" for g in order], step="post",
                     alpha=0.8, colors=[colours[g] for g in order])
    ax.axhline(budget, color="black", linewidth=2, linestyle="--", label=f"budget ({budget} CPUs)")
    ax.set_ylim(0, top * 1.15 + 0.5)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("threads runnable\n(on or waiting for a CPU)")
    f = run["figures"]
    ax.text(0.99, 0.95, f"oversubscribed {100 * f['oversubscribed_share']:.0f}% of the time, "
                        f"CPU-wait share {100 * f['cpu_wait_share']:.0f}%",
            transform=ax.transAxes, ha="right", va="top", fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": colour})


def _palette(n: int) -> list:
    base = ["#e67e22", "#16a085", "#8e44ad", "#95a5a6", "#d4ac0d", "#2c3e50", "#cb4335", "#5dade2"]
    return [base[i % len(base)] for i in range(n)]


def _libraries(ax, run: dict, end: float) -> None:
    series: dict[str, tuple[list, list]] = {}
    for change in run["libraries"]:
        present = set()
        for library, threads, filename in change["libs"]:
            key = f"{library} ({filename})"
            present.add(key)
            xs, ys = series.setdefault(key, ([], []))
            xs.append(change["t"])
            ys.append(threads)
        for key, (xs, ys) in series.items():
            if key not in present and ys and ys[-1] is not None:
                xs.append(change["t"])
                ys.append(None)
    for key, (xs, ys) in series.items():
        xs, ys = list(xs) + [end], list(ys) + [ys[-1]]
        ax.step(xs, [float("nan") if y is None else y for y in ys], where="post", linewidth=2,
                label=f"threads of {key}")
    if not series:
        ax.text(0.5, 0.5, "no BLAS/OpenMP library loaded", transform=ax.transAxes, ha="center", va="center",
                color="grey")
    ax.set_ylabel("library\nthreads")
    ax.set_ylim(bottom=0)
    ax.yaxis.get_major_locator().set_params(integer=True)


def _permits(ax, run: dict, end: float) -> None:
    p = run["permits"]
    xs = [x["t"] for x in p] + [end]
    for key, label, colour in (("held", "tasks running (permits held)", "#2471a3"),
                               ("waiting", "tasks waiting for a permit", "#e67e22"),
                               ("paused", "tasks waiting (I/O, locks): permit given back", "#16a085")):
        ys = [x[key] for x in p]
        ax.step(xs, ys + ys[-1:], where="post", label=label, color=colour, linewidth=1.6)
    ax.axhline(p[0]["permits"], color="black", linewidth=1, linestyle=":", label="permits (the budget)")
    ax.set_ylabel("corral\ntasks")
    ax.set_ylim(bottom=0)
    ax.yaxis.get_major_locator().set_params(integer=True)


def render_png(report: dict) -> bytes:
    fig, plt = _figure(report)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out.getvalue()


def page(report: dict) -> str:
    png = base64.b64encode(render_png(report)).decode()
    summary = html.escape(_report_summary.format_text(report))
    program = html.escape(" ".join(report["program"]))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>corral report: {program}</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1200px}} pre{{background:#f4f6f7;padding:1em;
white-space:pre-wrap}} img{{max-width:100%}} .note{{color:#555;font-size:90%}}</style></head>
<body><h1>corral report</h1><p><code>{program}</code> &middot; budget {report['budget']} CPUs &middot;
sampled every {report['interval_ms']:g} ms &middot; corral {html.escape(report['corral_version'])}</p>
<pre>{summary}</pre>
<img alt="threads runnable against the budget, library thread counts and corral's permits over time"
 src="data:image/png;base64,{png}">
<p class="note">Threads runnable: threads in state R (running, or ready and waiting for a CPU) at each
sample, stacked by who they are; above the dashed budget line the program is oversubscribed. Library
threads: the thread count each BLAS/OpenMP library reports (as corral._core.native_pools()). corral
tasks: the permit table (corral runs only). What each figure means: docs/report.md in corral's
source.</p></body></html>
"""


def write(report: dict, path: str) -> None:
    text = page(report)
    with open(path, "w") as f:
        f.write(text)
