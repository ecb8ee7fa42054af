"""Ablation tables across DVC experiments: recovery per setting, mean and 95% interval over seeds.

Experiments are read through DVC's Python API (``dvc.api.exp_show``), which flattens every params
and metrics file into one row per experiment. ``qmr ablation`` turns those rows into two tables:
one row per experiment, and one row per *setting* — the experiments that agree on every params key
except the seeds — with the number of distinct seeds n, the mean, the sample standard deviation and
a 95% Student t-interval over them (`qmr.stats.t_interval`; n = 1: no interval, "one seed").

Seeds: every params key named ``seed`` at any depth (:func:`is_seed`: ``seed``, ``base.toy.seed``,
``align.seed``, ``vote.seed``, ``recovery.seed``, ``restore.seed``). They are all sources of run-to-run
randomness, so a group's spread is the spread over whichever of them differ among its runs. Two
experiments of one setting with the same seeds are one run (the pipeline is deterministic): the
first is kept and the other listed under ``duplicates``.

Each group's test recovery is compared with the reference group (the baseline commit's setting,
usually subset ALL): "not significant" when the two intervals overlap (`qmr.stats.verdict`).
Written to ``metrics/ablation.json`` and ``metrics/ablation.md``; the `report` stage includes them.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable

from qmr.stats import rounded, t_interval, verdict

SETTING_KEYS = ("recovery.subset", "restore.objective", "restore.merge")  # always shown, even when constant
# Keys that say which variants ran, not how: each variant is restored and evaluated on its own, so an
# experiment restricted to one variant (`-S 'recovery.variants=[rtn-w2g128]'`, half the time) belongs
# to the same setting as the baseline that ran two.
NOT_SETTINGS = ("recovery.variants", "judge.variants")
SEED_KEY = "restore.seed"  # the seed column when no seed differs among the experiments
METRICS_FILE = "metrics/restore.json"
SPEED_FILE = "metrics/speed/restore.json"
PARAMS_FILE = "params.yaml"
SUMMARY_METRICS = ("test.recovery_ratio", "test.accuracy_restored", "control.accuracy_restored", "test.recovery_ratio_requantized")
TIMING = "train_seconds"  # wall-clock: kept out of metrics/ablation.json, in metrics/speed/ablation.json (`split_timings`)


def is_seed(key: str) -> bool:
    """A seed param: a key named ``seed`` at any depth."""
    return key == "seed" or key.endswith(".seed")


def param_keys(params: dict, prefix: str = "") -> list[str]:
    """Dot-joined keys of a params mapping, as DVC flattens them (lists are values, not levels)."""
    out: list[str] = []
    for k, v in params.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out += param_keys(v, key) if isinstance(v, dict) and v else [key]
    return out


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


def _varying(dicts: list[dict], keys: Iterable[str]) -> list[str]:
    return [k for k in keys if len({repr(d.get(k)) for d in dicts}) > 1]


def experiment_records(
    rows: Iterable[dict], model: str, variant: str, params: Iterable[str], benchmarks: Iterable[str] = ("test", "control")
) -> list[dict]:
    """One record per finished experiment (and the baseline commit) from ``dvc.api.exp_show`` rows.

    ``params`` are the params keys to read (:func:`param_keys` of the params file). Each record keeps
    ``seeds`` (every seed key, :func:`is_seed`) and ``setting`` (the other keys whose value differs
    among the experiments, beyond subset / objective / merge, which are always kept).
    """
    params = list(params)
    out = []
    values: list[dict] = []
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
        vals = {k: _whole(_get(row, k, PARAMS_FILE)) for k in params}
        rec = {
            "experiment": row.get("Experiment") or rev,
            "rev": rev,
            "baseline": row.get("typ") == "baseline",
            "seeds": {k: v for k, v in vals.items() if is_seed(k)},
            "pairs": int(pairs),
            "trained": _get(row, f"{prefix}.trained", METRICS_FILE),
            "steps": _whole(_number(_get(row, f"{prefix}.steps", METRICS_FILE))),
            "train_seconds": _number(_get(row, f"{prefix}.train_seconds", SPEED_FILE)),
        }
        for key in SETTING_KEYS:
            rec[key.split(".")[-1]] = vals.get(key, _get(row, key, PARAMS_FILE))
        for bench in benchmarks:
            for field in ("accuracy_quantized", "accuracy_restored", "recovery_ratio", "accuracy_requantized", "recovery_ratio_requantized"):
                value = _number(_get(row, f"{prefix}.{bench}.{field}", METRICS_FILE))
                if value is not None:
                    rec[f"{bench}.{field}"] = value
        out.append(rec)
        values.append(vals)
    others = _varying(values, [k for k in params if not is_seed(k) and k not in SETTING_KEYS and k not in NOT_SETTINGS])
    for rec, vals in zip(out, values, strict=True):
        rec["setting"] = {k: vals[k] for k in others}
    return out


def _seeds(rec: dict) -> dict:
    return rec.get("seeds") or {SEED_KEY: rec.get("seed")}  # records written before `seeds` had `seed`


def seed_columns(records: list[dict]) -> list[str]:
    """The seed keys that differ among ``records`` (``restore.seed`` when none does)."""
    keys = sorted({k for r in records for k in _seeds(r)})
    return _varying([_seeds(r) for r in records], keys) or [SEED_KEY]


def _seed_label(rec: dict, columns: list[str]) -> str:
    return "/".join(str(_seeds(rec).get(k)) for k in columns)


def _group_key(rec: dict) -> tuple:
    return (rec["subset"], rec["objective"], rec["merge"], tuple(sorted((rec.get("setting") or {}).items())))


def summarize(records: list[dict], metrics: Iterable[str] = SUMMARY_METRICS) -> list[dict]:
    """Per setting (all params but the seeds): n distinct seeds, mean, sample std and 95% t-interval of
    each metric, and the first metric's verdict against the reference group (:mod:`module docs <qmr.ablation>`)."""
    metrics = list(metrics)
    columns = seed_columns(records)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        groups[_group_key(rec)].append(rec)
    out = []
    reference = None
    for key, recs in sorted(groups.items(), key=lambda kv: repr(tuple(str(k) for k in kv[0]))):
        runs: dict[tuple, dict] = {}
        duplicates = []
        for r in recs:
            seeds = tuple(sorted(_seeds(r).items(), key=str))
            if seeds in runs:
                duplicates.append(r["experiment"])
            else:
                runs[seeds] = r
        kept = list(runs.values())
        subset, objective, merge, setting = key
        sizes = {name: sorted({r.get(name) for r in kept if r.get(name) is not None}) for name in ("pairs", "steps")}
        entry = {"subset": subset, "objective": objective, "merge": merge, "setting": dict(setting), "runs": len(kept),
                 "seeds": [_seed_label(r, columns) for r in kept], "seed_keys": columns,
                 "experiments": [r["experiment"] for r in kept], **sizes}  # fmt: skip
        if duplicates:
            entry["duplicates"] = duplicates
        for name in metrics:
            values = [r[name] for r in kept if r.get(name) is not None]
            if values:
                entry[f"{name}.n"] = len(values)
                entry[f"{name}.mean"] = round(statistics.fmean(values), 4)
                entry[f"{name}.std"] = round(statistics.stdev(values), 4) if len(values) > 1 else None
                entry[f"{name}.ci"] = rounded(t_interval(values))
        if reference is None and any(r["baseline"] for r in recs):
            reference = entry
        out.append(entry)
    if reference is not None and metrics:
        name = metrics[0]
        for entry in out:
            entry["reference"] = entry is reference
            if entry is reference:
                continue
            if entry.get(f"{name}.n", 0) < 2 or reference.get(f"{name}.n", 0) < 2:
                entry[f"{name}.vs_reference"] = "one seed"
            else:
                entry[f"{name}.vs_reference"] = verdict(entry[f"{name}.ci"], reference[f"{name}.ci"])
    return out


def _fmt(value, pct: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{100 * value:.1f}%" if pct else f"{value:.3f}"
    return str(value)


def split_timings(records: list[dict]) -> tuple[list[dict], dict]:
    """``records`` without their training seconds, and those seconds by experiment: wall-clock numbers
    are noisy and live under ``metrics/speed/`` (the quality metrics files never hold them)."""
    seconds = {r["experiment"]: r.get(TIMING) for r in records}
    return [{k: v for k, v in r.items() if k != TIMING} for r in records], {TIMING: seconds}


def with_timings(records: list[dict], timings: dict | None) -> list[dict]:
    """``records`` with the training seconds of `split_timings` put back (for `render`)."""
    seconds = (timings or {}).get(TIMING, {})
    return [{**r, TIMING: seconds.get(r["experiment"], r.get(TIMING))} for r in records]


def _group_seconds(entry: dict, records: list[dict]):
    by_name = {r["experiment"]: r.get(TIMING) for r in records}
    values = [by_name[x] for x in entry.get("experiments", []) if by_name.get(x) is not None]
    return statistics.fmean(values) if values else None


def _seconds(value) -> str:
    return "—" if value is None else f"{value:.0f}"


def _span(values) -> str:
    """A group's pairs or steps: one value, or min–max when seeds differ (RAND_NS draws per seed)."""
    if not values:
        return "—"
    return str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"


def _describe(entry: dict) -> str:
    parts = [str(entry[k]) for k in ("subset", "objective", "merge")] + [f"{k}={v}" for k, v in (entry.get("setting") or {}).items()]
    return ", ".join(parts)


def render(model: str, variant: str, records: list[dict], summary: list[dict]) -> list[str]:
    """Markdown: per-experiment rows, then per setting n, mean ± std [95% t-interval] over seeds."""
    columns = seed_columns(records)
    extra = sorted({k for r in records for k in (r.get("setting") or {})})
    lines = [f"Model `{model}`, variant `{variant}`: recovery ratio = (acc_restored − acc_q) / (acc_fp − acc_q).", ""]
    head = ["experiment", "subset", "objective", "merge", *extra, f"seed ({'/'.join(columns)})", "pairs", "steps", "test restored", "test recovery",
            "control restored", "requantized recovery", "train s"]  # fmt: skip
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(records, key=lambda r: (str(r["subset"]), str(r["objective"]), str(r["merge"]), repr(r.get("setting")), _seed_label(r, columns))):
        cells = [r["experiment"], r["subset"], r["objective"], r["merge"], *[(r.get("setting") or {}).get(k, "—") for k in extra],
                 _seed_label(r, columns), r["pairs"], _fmt(r.get("steps")), _fmt(r.get("test.accuracy_restored"), True),
                 _fmt(r.get("test.recovery_ratio")), _fmt(r.get("control.accuracy_restored"), True),
                 _fmt(r.get("test.recovery_ratio_requantized")), _seconds(r.get("train_seconds"))]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    ref = next((e for e in summary if e.get("reference")), None)
    lines += ["", "Per setting (every params key but the seeds): n distinct seeds, mean ± sample standard deviation "
              "[95% Student t-interval] over them; n = 1: one seed, no interval."
              + (f" Last column: test recovery against the baseline's setting ({_describe(ref)}); \"not significant\" "
                 "when the two intervals overlap." if ref else ""), ""]  # fmt: skip
    head = ["subset", "objective", "merge", *extra, "n", "pairs", "steps", "test recovery", "test restored", "control restored",
            "requantized recovery", "train s"]  # fmt: skip
    head += ["test recovery vs baseline"] if ref else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def pm(entry: dict, name: str, pct: bool = False) -> str:
        mean, std, ci = entry.get(f"{name}.mean"), entry.get(f"{name}.std"), entry.get(f"{name}.ci")
        if mean is None:
            return "—"
        scale = 100 if pct else 1
        text = f"{scale * mean:.1f}%" if pct else f"{mean:.3f}"
        if std is None:
            return text + " (one seed)"
        text += f" ± {scale * std:.1f}" if pct else f" ± {std:.3f}"
        if ci:
            text += f" [{scale * ci[0]:.1f}, {scale * ci[1]:.1f}]" if pct else f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        return text

    for e in summary:
        cells = [e["subset"], e["objective"], e["merge"], *[(e.get("setting") or {}).get(k, "—") for k in extra],
                 e.get("test.recovery_ratio.n", e["runs"]), _span(e.get("pairs")), _span(e.get("steps")), pm(e, "test.recovery_ratio"),
                 pm(e, "test.accuracy_restored", True), pm(e, "control.accuracy_restored", True),
                 pm(e, "test.recovery_ratio_requantized"), _seconds(_group_seconds(e, records))]  # fmt: skip
        if ref:
            cells.append("(baseline)" if e is ref else e.get("test.recovery_ratio.vs_reference") or "—")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def collect(repo: str | None = None, revs: list[str] | None = None, num: int = 1) -> list[dict]:
    """``dvc.api.exp_show`` rows for experiments derived from ``revs`` (default HEAD), ``num`` commits back."""
    import dvc.api

    return dvc.api.exp_show(repo=repo, revs=revs, num=num)
