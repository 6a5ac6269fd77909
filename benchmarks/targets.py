"""Issue 12's targets: on every workload corral at least level (within 5%) with the best of plain,
hand-tuned and `threadpool_limits(1)` measured in the same run, ahead of it on the unbalanced ones; a
program without pools within 3% of plain python; W6 at 90% of its ideal; W8 at 1.5x the stdlib's
executor; W11 (imap_unordered of a million tiny items) at least the stdlib's speed. The report marks each
as met or not."""

from __future__ import annotations

import dataclasses

# The simple fixes a user tries first; corral is measured against the best of them.
SIMPLE_FIXES = ("plain", "hand-tuned", "threadpoolctl")


@dataclasses.dataclass(frozen=True)
class Target:
    """corral's figure `against` (best_simple_fix, plain, ideal) must reach `at_least` (strictly above it when
    `strictly`)."""

    label: str
    against: str
    at_least: float
    strictly: bool = False

    def met(self, figure: float) -> bool:
        return figure > self.at_least if self.strictly else figure >= self.at_least


LEVEL = Target("within 5% of the best simple fix", "best_simple_fix", 0.95)
AHEAD = Target("ahead of the best simple fix (unbalanced)", "best_simple_fix", 1.0, strictly=True)
NO_SLOWER = Target("within 3% of plain python", "plain", 0.97)
IDEAL_90 = Target("at least 90% of ideal", "ideal", 0.90)
BEST_HAND_TUNED = Target("at least the best hand-tuned setting", "hand-tuned", 1.0)
STDLIB_1_5 = Target("at least 1.5x the stdlib executor", "plain", 1.5)
STDLIB_LEVEL = Target("at least the stdlib pool's speed", "plain", 1.0)


def best_simple_fix(configs: dict, higher_is_better: bool) -> tuple[str, float] | None:
    """(name, median) of the best of plain, hand-tuned and threadpoolctl that ran."""
    ran = [(name, configs[name]["summary"]["median"]) for name in SIMPLE_FIXES
           if name in configs and "summary" in configs[name]]
    if not ran:
        return None
    pick = max if higher_is_better else min
    return pick(ran, key=lambda item: item[1])


def figure(workload: dict, target: Target, config: str = "corral") -> float | None:
    """corral's speedup (above 1 is better) against what the target names; None when either did not run."""
    row = workload["configs"].get(config, {})
    if "summary" not in row:
        return None
    median = row["summary"]["median"]
    higher = workload["higher_is_better"]
    if target.against == "ideal":
        return median / workload["ideal"] if workload.get("ideal") else None
    if target.against == "best_simple_fix":
        best = best_simple_fix(workload["configs"], higher)
        reference = best[1] if best else None
    else:
        reference = workload["configs"].get(target.against, {}).get("summary", {}).get("median")
    if not reference:
        return None
    return median / reference if higher else reference / median
