"""Stage `align`: format alignment of every base model -> models/aligned/<model>, metrics/align.json.

With ``align.method: none`` the aligned model is a pointer to the base model. With ``lora_sft`` the
stage measures format compliance and accuracy on ``align.eval_samples`` problems of
``align.eval_benchmark`` with the base model, trains and merges the LoRA adapter (`qmr.align`), and
measures again with the aligned model. `quantize` reads models/aligned/<model> either way.
"""

from __future__ import annotations

import logging

from qmr import paths
from qmr.determinism import kernel_info
from qmr.errors import UserError
from qmr.io import read_jsonl, write_json

log = logging.getLogger(__name__)


def measure(params, model: str, model_path: str, records: list[dict], benchmark: str, name: str) -> dict:
    """Format compliance, accuracy and mean steps of greedy generations of ``records`` (``name``: base or
    aligned, the variant the openai backend maps to a served model)."""
    from qmr.determinism import set_determinism
    from qmr.evaluation import summarize
    from qmr.generation import backend_from_config, close_backend
    from qmr.prompts import build_prompt
    from qmr.traces import make_traces

    set_determinism(params.seed, params.threads)
    backend = backend_from_config(params.generate, model_path, model=model, variant=name)
    try:
        style = params.models[model].prompt_style
        prompts = [build_prompt(r["question"], style, getattr(backend, "tokenizer", None)) for r in records]
        comps = backend.generate(prompts, n=1, temperature=0.0, top_p=1.0, max_new_tokens=params.align.max_new_tokens, seed=params.seed)
    finally:
        close_backend(backend)
    kind = params.benchmarks[benchmark].kind
    traces = make_traces(records, comps, variant="align", benchmark=benchmark, kind=kind, prompts=prompts)
    s = summarize(traces, kind)
    return {k: s[k] for k in ("problems", "format_compliance", "accuracy", "mean_steps", "invalid")}


def run(params) -> None:
    from qmr.checkpoints import checkpoint_identity, write_pointer

    cfg = params.align
    metrics: dict = {}
    speed: dict = {}
    for model in params.models:
        base, out = paths.base_model(model), paths.aligned_model(model)
        if cfg.method == "none":
            out.mkdir(parents=True, exist_ok=True)
            write_pointer(out, str(base))
            metrics[model] = {"method": "none"}
            continue
        from qmr.align import build_examples, train_align
        from qmr.prompts import build_prompt

        records = read_jsonl(paths.benchmark(cfg.data))
        records = records[: cfg.samples] if cfg.samples else records
        tokenizer = None
        if params.models[model].prompt_style == "chat":
            from transformers import AutoTokenizer

            from qmr.checkpoints import resolve_model_path

            path, rev = resolve_model_path(base)
            tokenizer = AutoTokenizer.from_pretrained(path, revision=rev)
        style = params.models[model].prompt_style
        examples, dropped = build_examples(records, lambda q, _s=style, _t=tokenizer: build_prompt(q, _s, _t))
        if not examples:
            raise UserError(
                f"align.data: benchmark {cfg.data!r} ({paths.benchmark(cfg.data)}) has no record with a worked solution "
                "(field 'solution' or 'steps'); allowed: a benchmark whose records carry solutions (toy, gsm8k, math, prm800k)"
            )
        evals = read_jsonl(paths.benchmark(cfg.eval_benchmark))[: cfg.eval_samples] if cfg.eval_samples else []
        before = measure(params, model, str(base), evals, cfg.eval_benchmark, "base") if evals else None
        record = train_align(
            base, examples, cfg, out, threads=params.threads,
            checkpoint_dir=paths.cache_dir() / "align" / model, identity=checkpoint_identity(str(base)),
        )  # fmt: skip
        after = measure(params, model, str(out), evals, cfg.eval_benchmark, "aligned") if evals else None
        metrics[model] = {
            "method": cfg.method,
            "examples": len(examples),
            "dropped": dropped,
            "steps": record["steps"],
            "first_loss": record["first_loss"],
            "last_loss": record["last_loss"],
            "trainable_parameters": record["trainable_parameters"],
        }
        if before is not None:
            metrics[model].update(
                before=before,
                after=after,
                format_compliance_gain=round(after["format_compliance"] - before["format_compliance"], 4),
                accuracy_change=round(after["accuracy"] - before["accuracy"], 4),
            )
            log.info(
                "align %s: format compliance %.3f -> %.3f, accuracy %.3f -> %.3f on %d %s problems",
                model, before["format_compliance"], after["format_compliance"], before["accuracy"], after["accuracy"],
                len(evals), cfg.eval_benchmark,
            )  # fmt: skip
        speed[model] = {"train_seconds": record["seconds"], "steps": record["steps"], "threads": params.threads, "dtype": record["dtype"]}
    write_json(paths.metrics("align"), metrics)
    speed["kernels"] = kernel_info()  # the host CPU and the kernels it ran, to explain a diff across machines
    write_json(paths.speed("align"), speed)
