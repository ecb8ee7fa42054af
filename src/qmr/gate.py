"""A metrics gate for CI: fail when a watched metric moves beyond its tolerance.

Reads `dvc metrics diff --json` (committed HEAD vs workspace) and a tolerance file mapping metrics
files to dot-path globs with `max_drop` / `max_rise` (absolute units of the metric).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass
class Violation:
    file: str
    key: str
    old: float
    new: float
    limit: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key} moved {self.old} -> {self.new} ({self.limit})"


def check(diff: dict, tolerances: dict) -> tuple[list[Violation], list[tuple[str, str, float | None, float | None]]]:
    """Return (violations, watched rows) for a `dvc metrics diff --json` result."""
    violations, watched = [], []
    for file, rules in tolerances.items():
        for key, change in (diff.get(file) or {}).items():
            for pattern, rule in rules.items():
                if not fnmatch.fnmatchcase(key, pattern):
                    continue
                old, new = change.get("old"), change.get("new")
                watched.append((file, key, old, new))
                if not isinstance(old, (int, float)) or not isinstance(new, (int, float)):
                    if old is not None and new is None:
                        violations.append(Violation(file, key, old, float("nan"), "metric disappeared"))
                    continue
                if "max_drop" in rule and old - new > rule["max_drop"]:
                    violations.append(Violation(file, key, old, new, f"drop {old - new:.4g} > max_drop {rule['max_drop']}"))
                if "max_rise" in rule and new - old > rule["max_rise"]:
                    violations.append(Violation(file, key, old, new, f"rise {new - old:.4g} > max_rise {rule['max_rise']}"))
                break
    return violations, watched
