"""Traces: generate, grade and step-segment completions into the trace schema.

``generate_traces`` is the one path from (checkpoint, benchmark records) to graded traces: `generate`,
`reevaluate` and the tests use it; `align` grades its own greedy generations with ``make_traces``.
"""

from __future__ import annotations

from pathlib import Path


def make_traces(records, completions, *, variant: str, benchmark: str, kind: str, prompts: list[str]) -> list[dict]:
    from qmr.grading import grade
    from qmr.steps import split_steps

    traces = []
    for rec, prompt, comps in zip(records, prompts, completions, strict=False):
        for sample, comp in enumerate(comps):
            ext, correct = grade(comp.text, rec["answer"], kind)
            traces.append(
                {
                    "id": rec["id"],
                    "variant": variant,
                    "benchmark": benchmark,
                    "sample": sample,
                    "prompt": prompt,
                    "text": comp.text,
                    "steps": split_steps(comp.text),
                    "pred": ext.value,
                    "extraction": ext.method,
                    "correct": correct,
                    "tokens": comp.tokens,
                    "seconds": round(comp.seconds, 6),
                }
            )
    return traces


def generate_traces(
    params, model: str, model_path: str, variant: str, benchmark: str, records: list[dict], *,
    adapter: str | None = None, write_to: Path | None = None, partial: Path | None = None,
) -> list[dict]:  # fmt: skip
    """Generate and grade traces of ``records`` (benchmark ``benchmark``) with the checkpoint at
    ``model_path`` (+ optional LoRA ``adapter``), written to ``write_to`` when given.

    With ``partial`` (and a backend that supports it) each finished batch is appended there; a run
    killed midway continues from it with identical results; it is removed once the traces are written.
    """
    from qmr.checkpoints import checkpoint_identity
    from qmr.determinism import set_determinism
    from qmr.generation import backend_from_config, close_backend
    from qmr.generation.resume import resumable_generate
    from qmr.io import write_jsonl
    from qmr.modelspec import load_spec
    from qmr.prompts import build_prompt

    cfg = params.generate
    set_determinism(params.seed, params.threads)
    backend = backend_from_config(cfg, model_path, adapter=adapter, model=model, variant=variant)
    try:
        style = load_spec(model, params.models).prompt_style
        prompts = [build_prompt(r["question"], style, getattr(backend, "tokenizer", None)) for r in records]
        sampling = {"n": cfg.samples, "temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens, "seed": params.seed}
        if partial is not None:
            identity = {"batch_size": cfg.batch_size, "threads": params.threads,
                        "checkpoint": checkpoint_identity(model_path), "adapter": checkpoint_identity(adapter)}  # fmt: skip
            completions = resumable_generate(backend, prompts, sampling, partial, identity)
        else:
            completions = backend.generate(prompts, **sampling)
    finally:
        close_backend(backend)
    traces = make_traces(records, completions, variant=variant, benchmark=benchmark, kind=params.benchmarks[benchmark].kind, prompts=prompts)
    if write_to is not None:
        write_jsonl(write_to, traces)
    if partial is not None:
        partial.unlink(missing_ok=True)
    return traces
