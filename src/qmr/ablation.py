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

Each group's test recovery is compared with the reference group (the baseline commit's setting, or
the one named by ``against``, e.g. ``{"recovery.subset": "ALL"}``) in two ways: "not significant" when
the two t-intervals overlap (`qmr.stats.verdict`, crude and conservative), and paired by seed — the
mean difference over the seeds both groups ran, with a t-interval over those per-seed differences
(:func:`paired_difference`; "not significant" when it contains 0). Pairing removes the part of the
spread that the seeds share (the same silver draw, the same LoRA init), so it resolves smaller gaps.
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


def _matches(entry: dict, against: dict[str, str]) -> bool:
    fixed = {"recovery.subset": entry["subset"], "restore.objective": entry["objective"], "restore.merge": entry["merge"]}
    values = {**(entry.get("setting") or {}), **fixed}
    return all(str(values.get(k)) == str(v) for k, v in against.items())


def _reference(out: list[dict], groups: list[list[dict]], against: dict[str, str] | None) -> dict | None:
    """The reference group: the one matching every ``against`` key, else the baseline commit's."""
    if not against:
        return next((e for e, recs in zip(out, groups, strict=True) if any(r["baseline"] for r in recs)), None)
    from qmr.errors import UserError

    varying = {"recovery.subset", "restore.objective", "restore.merge"} | {k for e in out for k in (e.get("setting") or {})}
    unknown = sorted(set(against) - varying)
    if unknown:
        raise UserError(f"--against {', '.join(unknown)}: not a setting that differs among these experiments; "
                        f"allowed: {', '.join(sorted(varying))}")  # fmt: skip
    hits = [e for e in out if _matches(e, against)]
    if len(hits) != 1:
        settings = "; ".join(_describe(e) for e in out)
        wanted = ", ".join(f"{k}={v}" for k, v in against.items())
        raise UserError(f"--against {wanted}: matches {len(hits)} settings, need exactly 1; the settings are: {settings}")
    return hits[0]


def paired_difference(values: dict, reference: dict) -> dict | None:
    """Mean and 95% t-interval of ``values[s] − reference[s]`` over the seeds ``s`` both have; None
    with fewer than two shared seeds. ``vs_reference``: "not significant" when the interval holds 0."""
    shared = sorted(set(values) & set(reference), key=str)
    if len(shared) < 2:
        return None
    diffs = [values[s] - reference[s] for s in shared]
    ci = t_interval(diffs)
    word = "not significant" if ci[0] <= 0 <= ci[1] else "higher" if ci[0] > 0 else "lower"
    return {"n": len(shared), "seeds": list(shared), "mean": round(statistics.fmean(diffs), 4), "ci": rounded(ci),
            "vs_reference": word}  # fmt: skip


def summarize(records: list[dict], metrics: Iterable[str] = SUMMARY_METRICS, against: dict[str, str] | None = None) -> list[dict]:
    """Per setting (all params but the seeds): n distinct seeds, mean, sample std and 95% t-interval of
    each metric, and the first metric's verdicts against the reference group — interval overlap and
    paired by seed (:mod:`module docs <qmr.ablation>`). ``against``: params key → value naming the
    reference setting (default: the baseline commit's)."""
    metrics = list(metrics)
    columns = seed_columns(records)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        groups[_group_key(rec)].append(rec)
    out: list[dict] = []
    kept_runs: list[list[dict]] = []
    ordered = sorted(groups.items(), key=lambda kv: repr(tuple(str(k) for k in kv[0])))
    for key, recs in ordered:
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
        out.append(entry)
        kept_runs.append(kept)
    reference = _reference(out, [recs for _, recs in ordered], against)
    if reference is not None and metrics:
        name = metrics[0]

        def by_seed(entry: dict, runs: list[dict]) -> dict:
            return {label: r[name] for label, r in zip(entry["seeds"], runs, strict=True) if r.get(name) is not None}

        ref_values = by_seed(reference, kept_runs[out.index(reference)])
        for entry, runs in zip(out, kept_runs, strict=True):
            entry["reference"] = entry is reference
            if entry is reference:
                continue
            if entry.get(f"{name}.n", 0) < 2 or reference.get(f"{name}.n", 0) < 2:
                entry[f"{name}.vs_reference"] = "one seed"
            else:
                entry[f"{name}.vs_reference"] = verdict(entry[f"{name}.ci"], reference[f"{name}.ci"])
            diff = paired_difference(by_seed(entry, runs), ref_values)
            if diff is not None:
                entry[f"{name}.paired"] = diff
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
    lines += _render_paired(summary, extra, ref)
    return lines


def _render_paired(summary: list[dict], extra: list[str], ref: dict | None) -> list[str]:
    """Markdown: each setting's test recovery minus the baseline's, paired by seed (only settings that
    share at least two seeds with the baseline)."""
    rows = [e for e in summary if e.get("test.recovery_ratio.paired")]
    if ref is None or not rows:
        return []
    lines = ["", f"Paired by seed against the baseline ({_describe(ref)}): test recovery minus the baseline's on "
             "the same seeds, mean [95% t-interval over the per-seed differences]; \"not significant\" when it holds 0.",
             ""]  # fmt: skip
    head = ["subset", "objective", "merge", *extra, "shared seeds", "test recovery − baseline", "verdict"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in rows:
        d = e["test.recovery_ratio.paired"]
        cells = [e["subset"], e["objective"], e["merge"], *[(e.get("setting") or {}).get(k, "—") for k in extra],
                 ", ".join(d["seeds"]), f"{d['mean']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]", d["vs_reference"]]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def collect(repo: str | None = None, revs: list[str] | None = None, num: int = 1) -> list[dict]:
    """``dvc.api.exp_show`` rows for experiments derived from ``revs`` (default HEAD), ``num`` commits back."""
    import dvc.api

    return dvc.api.exp_show(repo=repo, revs=revs, num=num)
