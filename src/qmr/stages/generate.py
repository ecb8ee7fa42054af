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


def checkpoint_identity(path: str | None) -> list | None:
    """Name, size and mtime of every file of a local checkpoint: changes whenever it is rewritten."""
    from pathlib import Path

    from qmr.quant.load import resolve_model_path

    if path is None:
        return None
    resolved, revision = resolve_model_path(path)
    root = Path(resolved)
    if not root.is_dir():
        return [resolved, revision]
    return [[str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(root.rglob("*")) if f.is_file()]


def resume_state(partial_path, fingerprint: dict):
    """(appender, finished batches) for a resumable run: an earlier run's finished batches are reused
    only when everything that decides them (checkpoint, prompts, sampling, batching) is unchanged."""
    from qmr.generation import Completion
    from qmr.io import JsonlAppender

    appender = JsonlAppender(partial_path)
    rows = appender.existing()
    if rows and rows[0].get("fingerprint") != fingerprint:
        appender.close()
        partial_path.unlink()
        appender, rows = JsonlAppender(partial_path), []
    if not rows:
        appender.append({"fingerprint": fingerprint})
    done = {r["batch"]: [[Completion(**c) for c in comps] for comps in r["completions"]] for r in rows[1:]}
    if done:
        log.info("resuming %s: %d finished batch(es) from an interrupted run", partial_path, len(done))
    return appender, done


def resumable_generate(backend, prompts: list[str], sampling: dict, partial, identity: dict, progress: bool = True) -> list:
    """``backend.generate(prompts, **sampling)``, appending each finished batch to ``partial``: a killed
    run called again with the same arguments reuses those batches and ends with identical completions.
    ``identity`` names everything else that decides them (checkpoint files, batch size, threads). The
    caller removes ``partial`` once its own output is written. Backends without resume support just run.
    """
    import dataclasses
    import hashlib
    import json

    if not getattr(backend, "supports_resume", False):
        return backend.generate(prompts, **sampling, progress=progress)
    fingerprint = {**sampling, **identity, "prompts": hashlib.sha256(json.dumps(prompts).encode()).hexdigest()}
    appender, done = resume_state(partial, fingerprint)
    try:
        return backend.generate(
            prompts, **sampling, progress=progress, done=done,
            on_batch=lambda start, comps: appender.append({"batch": start, "completions": [[dataclasses.asdict(c) for c in cs] for cs in comps]}),
        )  # fmt: skip
    finally:
        appender.close()


def generate_traces(
    params, model: str, model_path: str, variant: str, benchmark: str, adapter: str | None = None, write_to=None, resume: bool = True
) -> list[dict]:
    """Generate and grade traces of `benchmark` with the checkpoint at `model_path` (+ optional LoRA adapter).

    With ``resume`` (and a backend that supports it), each finished batch is appended to a cache file
    under ``.qmr-cache/generate/``; a run killed midway continues from there with identical results.
    """
    from qmr.determinism import set_determinism
    from qmr.generation import backend_from_config

    cfg = params.generate
    spec = params.benchmarks[benchmark]
    set_determinism(params.seed, params.threads)
    records = read_jsonl(paths.benchmark(benchmark))
    backend = backend_from_config(cfg, model_path, adapter=adapter)
    style = params.models[model].prompt_style
    prompts = [build_prompt(r["question"], style, getattr(backend, "tokenizer", None)) for r in records]
    sampling = {"n": cfg.samples, "temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens, "seed": params.seed}
    partial = paths.cache_dir() / "generate" / model / variant / f"{benchmark}.partial.jsonl"
    identity = {"batch_size": cfg.batch_size, "threads": params.threads, "checkpoint": checkpoint_identity(model_path), "adapter": checkpoint_identity(adapter)}
    if resume:
        completions = resumable_generate(backend, prompts, sampling, partial, identity)
    else:
        completions = backend.generate(prompts, **sampling)
    traces = make_traces(records, completions, variant=variant, benchmark=benchmark, kind=spec.kind, prompts=prompts)
    if write_to is not None:
        write_jsonl(write_to, traces)
    partial.unlink(missing_ok=True)
    return traces


def run(params, model: str, variant: str, benchmark: str) -> None:
    for opt, value, allowed in (("model", model, params.models), ("variant", variant, params.quantize.variants), ("benchmark", benchmark, params.benchmarks)):
        if value not in allowed:
            raise UserError(f"--{opt}: got {value!r}; allowed: {', '.join(sorted(allowed))}")
    traces = generate_traces(params, model, str(paths.quantized_model(model, variant)), variant, benchmark, write_to=paths.traces(model, variant, benchmark))
    acc = sum(t["correct"] for t in traces) / max(1, len(traces))
    log.info("%s/%s on %s: %d traces, sample accuracy %.3f", model, variant, benchmark, len(traces), acc)
