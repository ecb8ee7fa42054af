"""Calibration texts for the quantizers (GPTQ/AWQ/SmoothQuant statistics), used by `quantize` and
by `restore` when it re-quantizes a merged model."""

from __future__ import annotations


def calibration_texts(records: list[dict], style: str = "plain", model_dir: str | None = None) -> list[str]:
    """Prompt + worked solution of each record, in the model's prompt style (``models.<m>.prompt_style``):
    a chat model is calibrated on what it will see at generation time, its chat template applied
    (the tokenizer is read from ``model_dir``, a checkpoint directory or pointer)."""
    from qmr.prompts import build_prompt

    tokenizer = None
    if style == "chat":
        from transformers import AutoTokenizer

        from qmr.checkpoints import resolve_model_path

        path, revision = resolve_model_path(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    return [build_prompt(r["question"], style, tokenizer) + r.get("solution", "") for r in records]
