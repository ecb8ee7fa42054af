"""Calibration texts for the quantizers (GPTQ/AWQ/SmoothQuant statistics), used by `quantize` and
by `restore` when it re-quantizes a merged model."""

from __future__ import annotations


def calibration_texts(records: list[dict], style: str = "plain", model_dir: str | None = None) -> list[str]:
    """What the model sees and writes: each record's prompt in the model's prompt style
    (``models.<m>.prompt_style``; ``chat`` applies the chat template of the tokenizer read from
    ``model_dir``, a checkpoint directory or pointer), followed by its worked solution in the pipeline's
    step format (`qmr.steps.step_target`, the targets `align` trains on: one step per line, GSM8K's
    ``<<…>>`` annotations removed, ``The answer is N.`` last). A record without a usable solution
    contributes its prompt alone."""
    from qmr.prompts import build_prompt
    from qmr.steps import step_target

    tokenizer = None
    if style == "chat":
        from transformers import AutoTokenizer

        from qmr.checkpoints import resolve_model_path

        path, revision = resolve_model_path(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    return [build_prompt(r["question"], style, tokenizer) + (step_target(r) or "") for r in records]
