"""Stage `quantize`: one variant of one model with its llmcompressor recipe."""

from __future__ import annotations

import logging

from qmr import paths
from qmr.io import read_jsonl, write_json
from qmr.prompts import build_prompt
from qmr.stages import UserError

log = logging.getLogger(__name__)


def calibration_texts(params) -> list[str]:
    cal = params.quantize.calibration
    records = read_jsonl(paths.benchmark(cal.benchmark))[: cal.samples]
    return [build_prompt(r["question"]) + r.get("solution", "") for r in records]


def run(params, model: str, variant: str) -> None:
    if variant not in params.quantize.variants:
        raise UserError(f"--variant: got {variant!r}; allowed: {', '.join(sorted(params.quantize.variants))}")
    if model not in params.models:
        raise UserError(f"--model: got {model!r}; allowed: {', '.join(sorted(params.models))}")
    spec = params.quantize.variants[variant]
    source = paths.aligned_model(model)  # the base model after format alignment (or a pointer to it)
    out = paths.quantized_model(model, variant)
    if spec.method == "none":
        from qmr.quant.run import checkpoint_bytes

        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "qmr_model.json", {"path": str(source), "revision": None})
        stats = {"method": "none", "seconds": 0.0, **checkpoint_bytes(source)}
    else:
        from qmr.determinism import set_determinism
        from qmr.quant.run import quantize_checkpoint

        set_determinism(params.seed, params.threads)
        stats = quantize_checkpoint(source, out, spec, calibration_texts(params), params.quantize.calibration.max_length, params.seed)
    write_json(out / "quantize.json", stats)
    log.info("quantized %s/%s: %s", model, variant, stats)
