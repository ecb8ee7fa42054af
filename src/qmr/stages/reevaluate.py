"""Stage `reevaluate`: evaluate restored models like `evaluate`; metrics/restore.json with recovery ratios.

Per eval benchmark: `problems`; each accuracy with its 95% Wilson interval (`accuracy_<label>_ci`);
each recovery ratio with a 95% percentile-bootstrap interval (`recovery_ratio<_label>_ci`) over the
problems, resampled with fp, quantized and restored correctness paired, 2,000 resamples seeded by
params `seed` (`qmr.stats.bootstrap_ratio`; null when the gap fp − quantized is not resolved).
"""

from __future__ import annotations

import logging

from qmr import paths
from qmr.determinism import kernel_info
from qmr.evaluation import majority_correct, recovery_ratio
from qmr.io import read_json, read_jsonl, write_csv, write_json
from qmr.stats import bootstrap_ratio, rounded, wilson

log = logging.getLogger(__name__)


def _accuracy(maj: dict[str, bool]) -> float:
    return round(sum(maj.values()) / len(maj), 4) if maj else 0.0


def _accuracy_ci(maj: dict[str, bool]) -> list[float] | None:
    return rounded(wilson(sum(maj.values()), len(maj)))


def _recovery_ci(fp: dict[str, bool], q: dict[str, bool], r: dict[str, bool], seed: int) -> list[float] | None:
    """Bootstrap interval of the recovery ratio over the problems all three were evaluated on."""
    ids = sorted(set(fp) & set(q) & set(r))
    if not ids:
        return None
    return rounded(bootstrap_ratio([fp[i] for i in ids], [q[i] for i in ids], [r[i] for i in ids], seed=seed))


def run(params) -> None:
    from qmr.traces import generate_traces

    ref = params.evaluate.reference
    evals = [b for b in params.generate.benchmarks if params.benchmarks[b].role == "eval"]
    metrics: dict = {}
    speed: dict = {}
    rows = []
    (paths.DATA / "traces_restored").mkdir(parents=True, exist_ok=True)  # a DVC output even if nothing trained
    for model in params.models:
        metrics[model] = {}
        speed[model] = {}
        for variant in params.recovery.variants:
            rdir = paths.restored_model(model, variant)
            info = read_json(rdir / "restore.json")
            silver_stats = read_json(paths.silver(model, variant).with_suffix(".stats.json"))
            entry: dict = {
                "subset": params.recovery.subset,
                "objective": params.restore.objective,
                "pairs": silver_stats.get("pairs", 0),
                "trained": bool(info.get("trained")),
                "steps": int(info.get("steps") or 0),  # optimizer steps: the training budget
            }
            speed[model][variant] = {"train_seconds": info.get("seconds", 0.0), **({"dtype": info["dtype"]} if "dtype" in info else {})}
            if not info.get("trained"):
                entry["message"] = info.get("message") or silver_stats.get("message", "nothing was trained")
            models_to_eval = {"restored": (str(paths.quantized_model(model, variant)), str(rdir) if info.get("trained") else None)}
            if (rdir / "requantized").is_dir():
                models_to_eval["requantized"] = (str(rdir / "requantized"), None)
            for bench in evals:
                kind = params.benchmarks[bench].kind
                maj_fp = majority_correct(read_jsonl(paths.traces(model, ref, bench)), kind)
                maj_q = majority_correct(read_jsonl(paths.traces(model, variant, bench)), kind)
                acc_fp, acc_q = _accuracy(maj_fp), _accuracy(maj_q)
                m = {"problems": len(maj_fp), "accuracy_fp": acc_fp, "accuracy_fp_ci": _accuracy_ci(maj_fp),
                     "accuracy_quantized": acc_q, "accuracy_quantized_ci": _accuracy_ci(maj_q)}  # fmt: skip
                for label, (path, adapter) in models_to_eval.items():
                    if label == "restored" and adapter is None:
                        maj_r = maj_q  # nothing trained: the restored model is the quantized one
                    else:
                        out = paths.restored_traces(model, variant, bench).with_suffix(f".{label}.jsonl")
                        name = f"{variant}+{label}"
                        traces = generate_traces(params, model, path, name, bench, read_jsonl(paths.benchmark(bench)), adapter=adapter,
                                                 write_to=out, partial=paths.generation_partial(model, name, bench))  # fmt: skip
                        maj_r = majority_correct(traces, kind)
                    acc_r = _accuracy(maj_r)
                    ratio = recovery_ratio(acc_fp, acc_q, acc_r)
                    suffix = "" if label == "restored" else "_" + label
                    m[f"accuracy_{label}"] = acc_r
                    m[f"accuracy_{label}_ci"] = _accuracy_ci(maj_r)
                    m[f"recovery_ratio{suffix}"] = ratio
                    m[f"recovery_ratio{suffix}_ci"] = None if ratio is None else _recovery_ci(maj_fp, maj_q, maj_r, params.seed)
                entry[bench] = m
                rows.append({"model": model, "variant": variant, "benchmark": bench, "stage": "fp", "accuracy": acc_fp})
                rows.append({"model": model, "variant": variant, "benchmark": bench, "stage": "quantized", "accuracy": acc_q})
                rows.append({"model": model, "variant": variant, "benchmark": bench, "stage": "restored", "accuracy": m["accuracy_restored"]})
            metrics[model][variant] = entry
            log.info("%s/%s: %s", model, variant, {b: entry[b] for b in evals})
    write_json(paths.metrics("restore"), metrics)
    speed["kernels"] = kernel_info()  # the host CPU and the kernels it ran, to explain a diff across machines
    write_json(paths.speed("restore"), speed)
    write_csv(paths.plots("restore") / "accuracy.csv", rows, ["model", "variant", "benchmark", "stage", "accuracy"])
