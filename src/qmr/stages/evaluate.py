"""Stage `evaluate`: metrics/evaluate.json (model -> variant -> benchmark) and accuracy plot data.

Beside each `accuracy` (majority vote over samples, one value per problem), `accuracy_ci` is its 95%
Wilson interval over the `problems` (`qmr.stats.wilson`).
"""

from __future__ import annotations

import logging

from qmr import paths
from qmr.evaluation import compare, majority_correct, summarize
from qmr.io import read_json, read_jsonl, write_csv, write_json
from qmr.stats import rounded, wilson

log = logging.getLogger(__name__)


def _with_interval(m: dict, correct: dict[str, bool]) -> dict:
    """``m`` with `accuracy_ci` (95% Wilson over problems) right after `accuracy`; other keys unchanged."""
    out = {}
    for key, value in m.items():
        out[key] = value
        if key == "accuracy":
            out["accuracy_ci"] = rounded(wilson(sum(correct.values()), len(correct)))
    return out


def run(params) -> None:
    ref = params.evaluate.reference
    metrics: dict = {}
    speed: dict = {}
    rows = []
    for model in params.models:
        metrics[model] = {}
        speed[model] = {}
        for variant, _spec in params.quantize.variants.items():
            entry: dict = {}
            for bench in params.generate.benchmarks:
                kind = params.benchmarks[bench].kind
                traces = read_jsonl(paths.traces(model, variant, bench))
                m = _with_interval(summarize(traces, kind), majority_correct(traces, kind))
                speed[model].setdefault(variant, {})[bench] = {"tokens_per_s": m.pop("tokens_per_s")}
                m.update(compare(read_jsonl(paths.traces(model, ref, bench)), traces, kind))
                entry[bench] = m
                rows.append({"model": model, "variant": variant, "benchmark": bench, "accuracy": m["accuracy"]})
            qstats = read_json(paths.quantized_model(model, variant) / "quantize.json")
            entry["size"] = {
                k: qstats[k]
                for k in ("scheme", "disk_bytes", "disk_ratio", "quantized_linear_bytes", "fp16_linear_bytes", "linear_compression_ratio")
                if k in qstats
            }
            metrics[model][variant] = entry
            log.info("%s/%s: %s", model, variant, {b: entry[b]["accuracy"] for b in params.generate.benchmarks})
    write_json(paths.metrics("evaluate"), metrics)
    write_json(paths.speed("evaluate"), speed)
    write_csv(paths.plots("evaluate") / "accuracy.csv", rows, ["model", "variant", "benchmark", "accuracy"])
