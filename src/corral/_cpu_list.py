"""Kernel CPU lists ("0-3,8"): parsing as corral's C++ cpu_set::parse reads them, and printing."""

from __future__ import annotations

from ._thread_limits import MAX_BUDGET


def parse_cpu_list(text: str) -> frozenset[int]:
    """The CPUs of a kernel cpu list ("0-3,8"), as corral's C++ cpu_set::parse reads it: items
    separated by commas, each an id or an inclusive range, blanks around items allowed. Anything
    else (an empty item, a reversed range, a negative or huge id, stray characters) is a ValueError."""
    cpus: set[int] = set()
    for item in text.split(","):
        first, dash, last = item.partition("-")
        low = _cpu_id(first, text)
        high = _cpu_id(last, text) if dash else low
        if high < low:
            raise ValueError(f"reversed range {item.strip()!r} in CPU list {text!r}")
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


MAX_CPU_ID = MAX_BUDGET - 1  # cpu_set::max_cpu_id: garbage like 0-4000000000 is an error, not a huge set


def _cpu_id(word: str, text: str) -> int:
    word = word.strip()
    if not word:
        raise ValueError(f"empty item in CPU list {text!r}")
    if not word.isdigit() or not word.isascii():
        raise ValueError(f"{word!r} is not a CPU id (in CPU list {text!r})")
    value = int(word)
    if value > MAX_CPU_ID:
        raise ValueError(f"CPU id {value} is out of range (in CPU list {text!r})")
    return value


def format_cpu_list(cpus) -> str:
    """The shortest cpu list: {0, 1, 2, 3, 8} -> "0-3,8"."""
    parts, ids = [], sorted(cpus)
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)
