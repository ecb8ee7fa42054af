"""Ablation tables across DVC experiments: recovery per `recovery.subset`, `restore.objective`, seed.

Experiments are read through DVC's Python API (``dvc.api.exp_show``), which flattens every params
and metrics file into one row per experiment. ``qmr ablation`` turns those rows into two tables:
one row per experiment, and the mean and spread (sample standard deviation) of each setting over its
seeds. They are written to ``metrics/ablation.json`` and ``metrics/ablation.md``; the `report` stage
includes them.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable

SETTING_KEYS = ("recovery.subset", "restore.objective", "restore.merge")
SEED_KEY = "restore.seed"
METRICS_FILE = "metrics/restore.json"


def _get(row: dict, key: str, file: str | None = None):
    """A flattened value; DVC prefixes a key with its file (``file:key``) when two files share it."""
    if file and f"{file}:{key}" in row:
        return row[f"{file}:{key}"]
    if key in row:
        return row[key]
    matches = [v for k, v in row.items() if k.endswith(":" + key)]
    return matches[0] if len(matches) == 1 else None


def _number(value) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _whole(value):
    """DVC returns every number as float: give seeds back as integers."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def experiment_records(rows: Iterable[dict], model: str, variant: str, benchmarks: Iterable[str] = ("test", "control")) -> list[dict]:
    """One record per finished experiment (and the baseline commit) from ``dvc.api.exp_show`` rows."""
    out = []
    seen_revs = set()
    for row in rows:
        rev = row.get("rev")
        if rev in (None, "workspace") or row.get("State") not in (None, "Success"):
            continue
        prefix = f"{model}.{variant}"
        pairs = _number(_get(row, f"{prefix}.pairs", METRICS_FILE))
        if pairs is None or rev in seen_revs:
            continue
        seen_revs.add(rev)
        rec = {
            "experiment": row.get("Experiment") or rev,
            "rev": rev,
            "baseline": row.get("typ") == "baseline",
            "seed": _whole(_get(row, SEED_KEY)),
            "pairs": int(pairs),
            "trained": _get(row, f"{prefix}.trained", METRICS_FILE),
        }
        for key in SETTING_KEYS:
            rec[key.split(".")[-1]] = _get(row, key)
        for bench in benchmarks:
            for field in ("accuracy_quantized", "accuracy_restored", "recovery_ratio", "accuracy_requantized", "recovery_ratio_requantized"):
                value = _number(_get(row, f"{prefix}.{bench}.{field}", METRICS_FILE))
                if value is not None:
                    rec[f"{bench}.{field}"] = value
        out.append(rec)
    return out


def summarize(records: list[dict], metric: str = "test.recovery_ratio") -> list[dict]:
    """Mean and sample standard deviation of ``metric`` per (subset, objective, merge) over seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        groups[(rec["subset"], rec["objective"], rec["merge"])].append(rec)
    out = []
    for (subset, objective, merge), recs in sorted(groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        entry = {"subset": subset, "objective": objective, "merge": merge, "runs": len(recs), "seeds": sorted({r["seed"] for r in recs}, key=str)}
        for name in (metric, "test.accuracy_restored", "control.accuracy_restored", "test.recovery_ratio_requantized"):
            values = [r[name] for r in recs if r.get(name) is not None]
            if values:
                entry[f"{name}.mean"] = round(statistics.fmean(values), 4)
                entry[f"{name}.std"] = round(statistics.stdev(values), 4) if len(values) > 1 else None
        out.append(entry)
    return out


def _fmt(value, pct: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{100 * value:.1f}%" if pct else f"{value:.3f}"
    return str(value)


def render(model: str, variant: str, records: list[dict], summary: list[dict]) -> list[str]:
    """Markdown: per-experiment rows, then mean ± std per setting."""
    lines = [f"Model `{model}`, variant `{variant}`: recovery ratio = (acc_restored − acc_q) / (acc_fp − acc_q).", ""]
    head = ["experiment", "subset", "objective", "merge", "seed", "pairs", "test restored", "test recovery", "control restored", "requantized recovery"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(records, key=lambda r: (str(r["subset"]), str(r["objective"]), str(r["merge"]), str(r["seed"]))):
        cells = [r["experiment"], r["subset"], r["objective"], r["merge"], r["seed"], r["pairs"],
                 _fmt(r.get("test.accuracy_restored"), True), _fmt(r.get("test.recovery_ratio")),
                 _fmt(r.get("control.accuracy_restored"), True), _fmt(r.get("test.recovery_ratio_requantized"))]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "Mean ± sample standard deviation over seeds:", ""]
    head = ["subset", "objective", "merge", "runs", "test recovery", "test restored", "control restored", "requantized recovery"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def pm(entry: dict, name: str, pct: bool = False) -> str:
        mean, std = entry.get(f"{name}.mean"), entry.get(f"{name}.std")
        if mean is None:
            return "—"
        scale = 100 if pct else 1
        text = f"{scale * mean:.1f}%" if pct else f"{mean:.3f}"
        return text if std is None else text + (f" ± {scale * std:.1f}" if pct else f" ± {std:.3f}")

    for e in summary:
        cells = [e["subset"], e["objective"], e["merge"], e["runs"], pm(e, "test.recovery_ratio"), pm(e, "test.accuracy_restored", True),
                 pm(e, "control.accuracy_restored", True), pm(e, "test.recovery_ratio_requantized")]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def collect(repo: str | None = None, revs: list[str] | None = None, num: int = 1) -> list[dict]:
    """``dvc.api.exp_show`` rows for experiments derived from ``revs`` (default HEAD), ``num`` commits back."""
    import dvc.api

    return dvc.api.exp_show(repo=repo, revs=revs, num=num)
