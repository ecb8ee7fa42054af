"""Stage `reevaluate`: evaluate restored models like `evaluate`; metrics/restore.json with recovery ratios."""

from __future__ import annotations

import logging

from qmr import paths
from qmr.determinism import kernel_info
from qmr.evaluation import majority_correct, recovery_ratio
from qmr.io import read_json, read_jsonl, write_csv, write_json

log = logging.getLogger(__name__)


def _accuracy(traces: list[dict], kind: str) -> float:
    maj = majority_correct(traces, kind)
    return round(sum(maj.values()) / len(maj), 4) if maj else 0.0


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
            }
            speed[model][variant] = {"train_seconds": info.get("seconds", 0.0), **({"dtype": info["dtype"]} if "dtype" in info else {})}
            if not info.get("trained"):
                entry["message"] = info.get("message") or silver_stats.get("message", "nothing was trained")
            models_to_eval = {"restored": (str(paths.quantized_model(model, variant)), str(rdir) if info.get("trained") else None)}
            if (rdir / "requantized").is_dir():
                models_to_eval["requantized"] = (str(rdir / "requantized"), None)
            for bench in evals:
                kind = params.benchmarks[bench].kind
                acc_fp = _accuracy(read_jsonl(paths.traces(model, ref, bench)), kind)
                acc_q = _accuracy(read_jsonl(paths.traces(model, variant, bench)), kind)
                m = {"accuracy_fp": acc_fp, "accuracy_quantized": acc_q}
                for label, (path, adapter) in models_to_eval.items():
                    if label == "restored" and adapter is None:
                        acc_r = acc_q  # nothing trained: the restored model is the quantized one
                    else:
                        out = paths.restored_traces(model, variant, bench).with_suffix(f".{label}.jsonl")
                        name = f"{variant}+{label}"
                        traces = generate_traces(params, model, path, name, bench, read_jsonl(paths.benchmark(bench)), adapter=adapter,
                                                 write_to=out, partial=paths.generation_partial(model, name, bench))  # fmt: skip
                        acc_r = _accuracy(traces, kind)
                    m[f"accuracy_{label}"] = acc_r
                    m[f"recovery_ratio{'' if label == 'restored' else '_' + label}"] = recovery_ratio(acc_fp, acc_q, acc_r)
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
