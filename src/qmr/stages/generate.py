"""Stage `generate`: one variant x one benchmark -> graded, step-segmented traces."""

from __future__ import annotations

import logging

from qmr import paths
from qmr.io import read_jsonl, write_jsonl
from qmr.prompts import build_prompt
from qmr.stages import UserError

log = logging.getLogger(__name__)


def make_traces(records, completions, *, variant: str, benchmark: str, kind: str, prompts: list[str]) -> list[dict]:
    from qmr.grading import extract_answer, is_equivalent
    from qmr.steps import split_steps

    traces = []
    for rec, prompt, comps in zip(records, prompts, completions, strict=False):
        for sample, comp in enumerate(comps):
            ext = extract_answer(comp.text, kind)
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
                    "correct": is_equivalent(ext.value, rec["answer"], kind),
                    "tokens": comp.tokens,
                    "seconds": round(comp.seconds, 6),
                }
            )
    return traces


def generate_traces(params, model: str, model_path: str, variant: str, benchmark: str, adapter: str | None = None) -> list[dict]:
    """Generate and grade traces of `benchmark` with the checkpoint at `model_path` (+ optional LoRA adapter)."""
    from qmr.determinism import set_determinism
    from qmr.generation import backend_from_config

    cfg = params.generate
    spec = params.benchmarks[benchmark]
    set_determinism(params.seed, params.threads)
    records = read_jsonl(paths.benchmark(benchmark))
    backend = backend_from_config(cfg, model_path, adapter=adapter)
    style = params.models[model].prompt_style
    prompts = [build_prompt(r["question"], style, getattr(backend, "tokenizer", None)) for r in records]
    completions = backend.generate(
        prompts, n=cfg.samples, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=params.seed
    )
    return make_traces(records, completions, variant=variant, benchmark=benchmark, kind=spec.kind, prompts=prompts)


def run(params, model: str, variant: str, benchmark: str) -> None:
    for opt, value, allowed in (("model", model, params.models), ("variant", variant, params.quantize.variants), ("benchmark", benchmark, params.benchmarks)):
        if value not in allowed:
            raise UserError(f"--{opt}: got {value!r}; allowed: {', '.join(sorted(allowed))}")
    traces = generate_traces(params, model, str(paths.quantized_model(model, variant)), variant, benchmark)
    write_jsonl(paths.traces(model, variant, benchmark), traces)
    acc = sum(t["correct"] for t in traces) / max(1, len(traces))
    log.info("%s/%s on %s: %d traces, sample accuracy %.3f", model, variant, benchmark, len(traces), acc)
