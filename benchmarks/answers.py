"""A workload's result checked against plain python's: the real-library workloads print an `answer` (scores,
sums, eigenvalues) in their result line, and every configuration's must match plain's, equal or within a
relative tolerance the workload states (thread counts change the order of floating-point sums)."""

from __future__ import annotations

import math


def difference(answer, reference, rtol: float) -> str | None:
    """None when `answer` matches `reference` (numbers within rtol, anything else equal), else where it differs."""
    if isinstance(reference, bool) or not isinstance(reference, (int, float, list, tuple, dict)):
        return None if answer == reference else f"{answer!r} != {reference!r}"
    if isinstance(reference, (int, float)):
        if isinstance(answer, (int, float)) and not isinstance(answer, bool) and (
                math.isclose(answer, reference, rel_tol=rtol, abs_tol=0.0) or answer == reference):
            return None
        return f"{answer!r} != {reference!r} (rtol {rtol:g})"
    if isinstance(reference, dict):
        if not isinstance(answer, dict) or answer.keys() != reference.keys():
            return f"keys {sorted(answer) if isinstance(answer, dict) else answer!r} != {sorted(reference)}"
        for key in reference:
            why = difference(answer[key], reference[key], rtol)
            if why:
                return f"{key}: {why}"
        return None
    if not isinstance(answer, (list, tuple)) or len(answer) != len(reference):
        return f"{answer!r} != {reference!r}"
    for index, (a, r) in enumerate(zip(answer, reference)):
        why = difference(a, r, rtol)
        if why:
            return f"[{index}]: {why}"
    return None
