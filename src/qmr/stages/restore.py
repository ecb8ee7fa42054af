"""Stage `restore`: DPO (or a control objective: sft, step_dpo, kd/gkd from the reference model) + LoRA on the
quantized model, from the silver pairs."""

from __future__ import annotations

import logging

from qmr import paths
from qmr.io import read_jsonl, write_json

log = logging.getLogger(__name__)


def run(params, model: str, variant: str) -> None:
    from qmr.checkpoints import checkpoint_identity
    from qmr.determinism import set_determinism
    from qmr.restore.train import TEACHER_OBJECTIVES, merge_and_requantize, requantize_spec, train_restore

    cfg = params.restore
    pairs = read_jsonl(paths.silver(model, variant))
    out = paths.restored_model(model, variant)
    set_determinism(cfg.seed, params.threads)
    quantized = paths.quantized_model(model, variant)
    # kd / gkd distil from the reference model (the full-precision checkpoint the silver teacher also is)
    teacher = paths.quantized_model(model, params.evaluate.reference)
    identity = checkpoint_identity(str(quantized))
    if cfg.objective in TEACHER_OBJECTIVES:
        identity = {"base": identity, "teacher": checkpoint_identity(str(teacher))}
    # a killed run resumes from its last trainer checkpoint (restore.checkpoint_steps) with the same result
    stats = train_restore(
        quantized, pairs, cfg, out, threads=params.threads,
        checkpoint_dir=paths.cache_dir() / "restore" / model / variant, identity=identity, teacher_dir=teacher,
    )  # fmt: skip
    if cfg.merge == "requantize" and stats.get("trained"):
        from qmr.modelspec import load_spec
        from qmr.quant.calibration import calibration_texts

        spec = requantize_spec(params.quantize.variants[variant], cfg.requantize_method)
        cal = params.quantize.calibration
        records = read_jsonl(paths.benchmark(cal.benchmark))[: cal.samples]
        texts = calibration_texts(records, load_spec(model, params.models).prompt_style, str(quantized))
        qstats = merge_and_requantize(out, out / "requantized", spec, texts, max_length=cal.max_length, seed=params.seed)
        stats["requantize"] = {k: v for k, v in qstats.items() if isinstance(v, (int, float, str))}
        write_json(out / "requantize.json", stats["requantize"])
    log.info("restored %s/%s: %s", model, variant, {k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))})
