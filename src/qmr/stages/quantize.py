"""Stage `quantize`: one variant of one model with its llmcompressor recipe."""

from __future__ import annotations

import logging

from qmr import paths
from qmr.checkpoints import write_pointer
from qmr.errors import choose
from qmr.io import read_jsonl, write_json
from qmr.modelspec import load_spec

log = logging.getLogger(__name__)


def run(params, model: str, variant: str) -> None:
    spec = choose("variant", variant, params.quantize.variants)
    model_spec = load_spec(model, params.models)
    source = paths.aligned_model(model)  # the base model after format alignment (or a pointer to it)
    out = paths.quantized_model(model, variant)
    if spec.method == "none":
        from qmr.quant.run import checkpoint_bytes

        out.mkdir(parents=True, exist_ok=True)
        write_pointer(out, str(source))
        stats = {"method": "none", "seconds": 0.0, **checkpoint_bytes(source)}
    else:
        from qmr.determinism import set_determinism
        from qmr.quant.calibration import calibration_texts
        from qmr.quant.run import quantize_checkpoint

        set_determinism(params.seed, params.threads)
        cal = params.quantize.calibration
        records = read_jsonl(paths.benchmark(cal.benchmark))[: cal.samples]
        texts = calibration_texts(records, model_spec.prompt_style, str(source))
        stats = quantize_checkpoint(source, out, spec, texts, cal.max_length, params.seed)
    # wall clock goes to metrics/speed/, never into the checkpoint: a re-run that writes the same weights
    # leaves the output's hash unchanged, so DVC does not re-run the generation that follows it
    timing = {k: stats.pop(k) for k in ("seconds", "seconds_total") if k in stats}
    write_json(out / "quantize.json", stats)
    write_json(paths.speed("quantize", f"{model}/{variant}"), {**timing, "threads": params.threads})
    log.info("quantized %s/%s: %s (%s)", model, variant, stats, timing)
