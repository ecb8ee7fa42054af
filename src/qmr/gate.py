"""A metrics gate for CI: fail when a watched metric moves beyond its tolerance.

Reads `dvc metrics diff --all --json` (committed REV vs workspace) and a tolerance file::

    metrics/evaluate.json:                      # a metrics file, as dvc.yaml names it
      "toy.fp.test.accuracy": {max_drop: 0.03}  # a dot-path glob (as `dvc metrics diff` flattens keys)
      "toy.*.test.recovery_ratio": {aggregate: mean, max_drop: 0.2}

Each metric is governed by the first pattern of its file that matches it. A rule without
``aggregate`` watches every matched metric on its own; ``aggregate: mean`` watches the mean over all
of them (a quantity far less sensitive to one hypersensitive cell). ``max_drop`` / ``max_rise`` are
allowed changes against the committed value, in the metric's own units.

A gate that watches nothing cannot fail, so it is an error too: a tolerance file that is not a
mapping, an unknown rule key, a pattern that matches no metric, or no watched metric at all.
:func:`spread` applies the same rules to several runs (e.g. seeds) to measure how far a correct run
moves, which is where the tolerances come from (README, "Reproducibility").
"""

from __future__ import annotations

import fnmatch
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from qmr.errors import UserError

RULE_KEYS = {"max_drop", "max_rise", "aggregate"}
AGGREGATES = ("mean",)


class GateConfigError(UserError, ValueError):
    """The tolerance file is malformed (reported as one line, exit code 2)."""


@dataclass
class Violation:
    file: str
    key: str
    old: float
    new: float
    limit: str

    def __str__(self) -> str:
        if not self.file:
            return self.limit
        if self.limit.startswith("pattern"):
            return f"{self.file}: {self.key}: {self.limit}"
        return f"{self.file}: {self.key} moved {_fmt(self.old)} -> {_fmt(self.new)} ({self.limit})"


def _fmt(x) -> str:
    return "nan" if isinstance(x, float) and math.isnan(x) else f"{x:.6g}" if isinstance(x, (int, float)) else str(x)


def validate(tolerances, source: str = "tolerances") -> dict[str, dict[str, dict]]:
    """Check the tolerance file's shape; every problem names the file, the key and what is allowed."""
    if not isinstance(tolerances, dict) or not tolerances:
        raise GateConfigError(f"{source}: got {type(tolerances).__name__}; allowed: a non-empty mapping of metrics file -> {{glob: rule}}")
    for file, rules in tolerances.items():
        if not isinstance(rules, dict) or not rules:
            raise GateConfigError(f"{source}: {file}: got {rules!r}; allowed: a non-empty mapping of glob -> rule")
        for pattern, rule in rules.items():
            where = f"{source}: {file}: {pattern!r}"
            if not isinstance(rule, dict) or not rule.keys() & {"max_drop", "max_rise"}:
                raise GateConfigError(f"{where}: got {rule!r}; allowed: a mapping with max_drop and/or max_rise")
            unknown = set(rule) - RULE_KEYS
            if unknown:
                raise GateConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(RULE_KEYS)}")
            for k in ("max_drop", "max_rise"):
                v = rule.get(k)
                if k in rule and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0):
                    raise GateConfigError(f"{where}: {k}: got {v!r}; allowed: a number >= 0")
            if "aggregate" in rule and rule["aggregate"] not in AGGREGATES:
                raise GateConfigError(f"{where}: aggregate: got {rule['aggregate']!r}; allowed: {', '.join(AGGREGATES)}")
    return tolerances


def _assign(keys: Iterable[str], rules: dict) -> dict[str, list[str]]:
    """pattern -> the keys it governs (each key goes to the first pattern that matches it)."""
    owned: dict[str, list[str]] = {p: [] for p in rules}
    for key in keys:
        for pattern in rules:
            if fnmatch.fnmatchcase(key, pattern):
                owned[pattern].append(key)
                break
    return owned


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def watched_values(metrics: dict[str, dict[str, float]], tolerances: dict) -> dict[tuple[str, str], float | None]:
    """(file, label) -> value for one run's flattened metrics ({file: {dot.key: value}}).

    The label is the metric key, or ``mean(<pattern>)`` for an aggregated rule.
    """
    out: dict[tuple[str, str], float | None] = {}
    for file, rules in tolerances.items():
        flat = metrics.get(file) or {}
        for pattern, keys in _assign(flat, rules).items():
            if rules[pattern].get("aggregate") == "mean":
                values = [v for v in (_num(flat[k]) for k in keys) if v is not None]
                out[(file, f"mean({pattern})")] = statistics.fmean(values) if values else None
            else:
                for k in keys:
                    out[(file, k)] = _num(flat[k])
    return out


def check(diff: dict, tolerances: dict) -> tuple[list[Violation], list[tuple[str, str, float | None, float | None]]]:
    """Return (violations, watched rows) for a `dvc metrics diff --all --json` result."""
    validate(tolerances)
    violations: list[Violation] = []
    watched: list[tuple[str, str, float | None, float | None]] = []
    for file, rules in tolerances.items():
        changes = diff.get(file) or {}
        owned = _assign(changes, rules)
        for pattern, keys in owned.items():
            rule = rules[pattern]
            if not keys:
                violations.append(Violation(file, pattern, float("nan"), float("nan"), "pattern matches no metric (a typo, or a metric that is gone)"))
                continue
            if rule.get("aggregate") == "mean":
                pairs = [(_num(changes[k].get("old")), _num(changes[k].get("new"))) for k in keys]
                olds = [o for o, _ in pairs if o is not None]
                news = [n for _, n in pairs if n is not None]
                items = [(f"mean({pattern})", statistics.fmean(olds) if olds else None,
                          statistics.fmean(news) if news else None, len(news) < len(olds))]  # fmt: skip
            else:
                items = [(k, _num(changes[k].get("old")), _num(changes[k].get("new")), False) for k in keys]
            for label, old, new, lost in items:
                watched.append((file, label, old, new))
                if (old is not None and new is None) or lost:
                    violations.append(Violation(file, label, old, float("nan"), "metric disappeared"))
                    continue
                if old is None or new is None:
                    continue  # a new metric: nothing to compare with yet
                if "max_drop" in rule and old - new > rule["max_drop"] + 1e-12:
                    violations.append(Violation(file, label, old, new, f"drop {old - new:.4g} > max_drop {rule['max_drop']}"))
                if "max_rise" in rule and new - old > rule["max_rise"] + 1e-12:
                    violations.append(Violation(file, label, old, new, f"rise {new - old:.4g} > max_rise {rule['max_rise']}"))
    if not watched:
        violations.append(Violation("", "", float("nan"), float("nan"), "the gate watches no metric at all"))
    return violations, watched


def flatten(nested, prefix: str = "") -> dict[str, float]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, as `dvc metrics diff` names keys."""
    if not isinstance(nested, dict):
        return {prefix: nested}
    out: dict[str, float] = {}
    for k, v in nested.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def spread(runs: dict[str, dict[str, dict]], tolerances: dict, reference: str | None = None) -> list[dict]:
    """Per watched quantity: mean, min, max, sample std over runs, and the largest move from ``reference``.

    ``runs`` maps a run name to its flattened metrics ({file: {dot.key: value}}).
    """
    validate(tolerances)
    per_run = {name: watched_values(m, tolerances) for name, m in runs.items()}
    labels = sorted({lab for vals in per_run.values() for lab in vals})
    rows = []
    for file, label in labels:
        values = {name: vals.get((file, label)) for name, vals in per_run.items()}
        nums = [v for v in values.values() if v is not None]
        if not nums:
            continue
        row = {"file": file, "metric": label, "values": values, "mean": statistics.fmean(nums), "min": min(nums), "max": max(nums),
               "std": statistics.stdev(nums) if len(nums) > 1 else 0.0}  # fmt: skip
        rule = _rule_for(tolerances[file], label)
        row.update({k: rule.get(k) for k in ("max_drop", "max_rise")})
        ref = values.get(reference) if reference else None
        if ref is not None:
            row["largest_drop"] = max(0.0, ref - row["min"])
            row["largest_rise"] = max(0.0, row["max"] - ref)
        rows.append(row)
    return rows


def _rule_for(rules: dict, label: str) -> dict:
    if label.startswith("mean(") and label[5:-1] in rules:
        return rules[label[5:-1]]
    return next((rule for pattern, rule in rules.items() if fnmatch.fnmatchcase(label, pattern)), {})


def experiment_metrics(show: list[dict], only: Iterable[str] = ()) -> dict[str, dict[str, dict]]:
    """Runs from `dvc exp show --json`: the baseline commit first, then its experiments.

    Returns run name -> {metrics file: {dot.key: value}}; ``only`` keeps the named experiments
    (name or rev prefix) besides the baseline.
    """
    only = tuple(only)
    runs: dict[str, dict[str, dict]] = {}

    def add(name: str, data: dict | None) -> None:
        metrics = (data or {}).get("metrics") or {}
        if metrics:
            runs[name] = {file: flatten((entry or {}).get("data") or {}) for file, entry in metrics.items()}

    for entry in show:
        if entry.get("rev") == "workspace":
            continue
        add(f"{entry.get('name') or entry['rev'][:7]} (committed)", entry.get("data"))
        for group in entry.get("experiments") or []:
            for exp in group.get("revs") or []:
                name, rev = exp.get("name") or "", exp.get("rev") or ""
                if only and not any(o in (name, rev) or (len(o) >= 4 and rev.startswith(o)) for o in only):
                    continue
                add(name or rev[:7], exp.get("data"))
    return runs


def read_tolerances(path: str) -> dict[str, dict[str, dict]]:
    """The validated tolerance file; a `GateConfigError` naming it when unreadable or malformed."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(1_000_001)
        if len(text) > 1_000_000:
            raise GateConfigError(f"{path}: larger than 1 MB; allowed: a small YAML mapping")
        raw = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise GateConfigError(f"{path}: cannot read it as UTF-8 YAML ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return validate(raw, path)


def _dvc_json(args: list[str], what: str):
    """``dvc <args> --json`` through this interpreter's dvc (no need for the environment's bin/ on PATH)."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "dvc", *args, "--json"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"{what} failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout or "null")


def metrics_diff(rev: str) -> dict:
    """`dvc metrics diff REV --all` of the workspace."""
    return _dvc_json(["metrics", "diff", rev, "--all"], "dvc metrics diff") or {}


def experiment_runs(rev: str, only: Iterable[str] = ()) -> dict[str, dict[str, dict]]:
    """Metrics of the workspace and the DVC experiments of REV (`experiment_metrics`)."""
    runs = experiment_metrics(_dvc_json(["exp", "show", "--rev", rev], "dvc exp show") or [], only=only)
    if not runs:
        raise UserError("no experiments with metrics found; run e.g. `dvc exp run -S base.toy.seed=1` first")
    return runs


def format_watched(watched: list[tuple[str, str, float | None, float | None]]) -> list[str]:
    lines = [f"{'metric':72s} {'committed':>10s} {'this run':>10s}"]
    cell = lambda x: "-" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x)  # noqa: E731
    lines += [f"{file + ':' + key:72s} {cell(old):>10s} {cell(new):>10s}" for file, key, old, new in watched]
    return lines


def format_spread(runs: dict, rows: list[dict]) -> list[str]:
    names = list(runs)
    lines = ["runs: " + ", ".join(names) + f" (reference: {names[0]})",
             f"{'metric':64s} {'mean':>8s} {'min':>8s} {'max':>8s} {'std':>8s} {'drop':>8s} {'rise':>8s}  tolerance"]  # fmt: skip
    for r in rows:
        tol = ", ".join(f"{k} {r[k]}" for k in ("max_drop", "max_rise") if r.get(k) is not None)
        lines.append(f"{r['file'] + ':' + r['metric']:64s} {r['mean']:8.4f} {r['min']:8.4f} {r['max']:8.4f} {r['std']:8.4f} "
                     f"{r.get('largest_drop', 0):8.4f} {r.get('largest_rise', 0):8.4f}  {tol}")  # fmt: skip
    return lines
