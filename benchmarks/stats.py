"""Summaries of repeated timings, and ratios that read the same way whatever the metric."""

from __future__ import annotations

import statistics


def summarize(values: list[float]) -> dict:
    """Median and spread (min, max, quartiles) of one configuration's repetitions."""
    if not values:
        raise ValueError("no values to summarize")
    ordered = sorted(values)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "q1": q1,
        "q3": q3,
    }


def speedup(value: float, reference: float, higher_is_better: bool) -> float:
    """How many times better `value` is than `reference`: above 1 is better, below 1 worse, for any metric."""
    if value <= 0 or reference <= 0:
        raise ValueError(f"speedup needs positive values, got {value} and {reference}")
    return value / reference if higher_is_better else reference / value


def best_index(values: list[float], higher_is_better: bool) -> int:
    """Index of the best of `values` by the metric's direction."""
    if not values:
        raise ValueError("no values to choose from")
    pick = max if higher_is_better else min
    return values.index(pick(values))
