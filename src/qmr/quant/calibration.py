"""Calibration texts for the quantizers (GPTQ/AWQ/SmoothQuant statistics), used by `quantize` and
by `restore` when it re-quantizes a merged model."""

from __future__ import annotations


def calibration_texts(records: list[dict]) -> list[str]:
    """Prompt + worked solution of each record, in the plain prompt style."""
    from qmr.prompts import build_prompt

    return [build_prompt(r["question"]) + r.get("solution", "") for r in records]
