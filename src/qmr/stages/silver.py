"""Stage `silver`: Silver Bullet DPO pairs for `recovery.subset`, mined on the mining split only."""

from __future__ import annotations

import logging

from qmr import paths
from qmr.errors import UserError, choose
from qmr.io import read_jsonl, write_json, write_jsonl
from qmr.modelspec import load_spec

log = logging.getLogger(__name__)


def benchmarks_with_role(params, role: str) -> list[str]:
    return [b for b in params.generate.benchmarks if params.benchmarks[b].role == role]


def eval_ids(params) -> set[str]:
    ids: set[str] = set()
    for name, spec in params.benchmarks.items():
        if spec.role == "eval":
            ids.update(r["id"] for r in read_jsonl(paths.benchmark(name)))
    return ids


def _teacher(params, model: str, variant: str):
    """The teacher of `recovery.teacher`, made resumable: the fp model's sampled batches go to
    ``.qmr-cache/silver/`` as they finish (removed when the stage ends), an endpoint's answers to a
    per-prompt response cache there (kept, so a re-run makes no repeated calls)."""
    cfg = params.recovery
    cache = paths.cache_dir() / "silver" / model / variant
    if cfg.teacher == "fp":
        from qmr.generation import resumable_sampler
        from qmr.restore.silver import teacher_from_backend

        backend, generate = resumable_sampler(params, model, params.evaluate.reference, cache)  # (openai: a managed server stops at exit)
        return teacher_from_backend(backend, temperature=cfg.teacher_temperature, max_new_tokens=params.generate.max_new_tokens,
                                    seed=cfg.seed, generate=generate)  # fmt: skip
    from qmr.endpoints import endpoint_named
    from qmr.restore.llm_teacher import llm_teacher

    endpoint = endpoint_named(params.endpoints, cfg.teacher, "recovery.teacher")
    return llm_teacher(endpoint, temperature=cfg.teacher_temperature, max_tokens=params.generate.max_new_tokens,
                       cache=cache / "teacher-responses.jsonl")  # fmt: skip


def run(params, model: str, variant: str) -> None:
    from qmr.determinism import set_determinism
    from qmr.restore.silver import build_pairs

    cfg = params.recovery
    load_spec(model, params.models)  # validates --model
    choose("variant", variant, params.quantize.variants)
    mine = benchmarks_with_role(params, "mine")
    set_determinism(cfg.seed, params.threads)
    labels, qt, fp, records = [], [], [], []
    for bench in mine:
        labels += [lab for lab in read_jsonl(paths.labels(model, variant)) if lab.get("benchmark", bench) == bench]
        qt += read_jsonl(paths.traces(model, variant, bench))
        fp += read_jsonl(paths.traces(model, params.evaluate.reference, bench))
        records += read_jsonl(paths.benchmark(bench))
    kind = params.benchmarks[mine[0]].kind
    # The teacher writes chosen for the step-resumed subsets, and for POOL when it is an endpoint
    # (POOL with teacher fp reads the reference's own traces on the pool).
    step_resumed = cfg.subset not in ("RAND_NS", "ALL_NS", "POOL")
    asks_teacher = (step_resumed and labels) or (cfg.subset == "POOL" and cfg.teacher != "fp")
    teacher = _teacher(params, model, variant) if asks_teacher else None
    pairs, stats = build_pairs(cfg.subset, labels, qt, fp, records, teacher, cfg, eval_ids(params), kind=kind)
    for p in pairs:
        p["variant"] = variant
    write_jsonl(paths.silver(model, variant), pairs)
    write_json(paths.silver(model, variant).with_suffix(".stats.json"), stats)
    for partial in (paths.cache_dir() / "silver" / model / variant).glob("gen-*.partial.jsonl"):
        partial.unlink()  # the outputs are written: the fp teacher's resume batches are no longer needed
    if stats.get("empty"):
        log.warning("%s/%s subset %s: no pairs (%s)", model, variant, cfg.subset, stats.get("message"))
    else:
        skipped = ", ".join(f"{k}={v}" for k, v in stats.get("skipped", {}).items()) or "none"
        log.info("%s/%s subset %s: %d pairs (%d dropped unverified; labels and traces skipped: %s)", model, variant, cfg.subset,
                 len(pairs), stats.get("dropped_unverified", 0), skipped)  # fmt: skip
    failed, calls = getattr(teacher, "failed", 0), getattr(teacher, "calls", 0)
    if calls and failed / calls > params.judge.max_failed_share:  # endpoint teacher: failures are not cached
        raise UserError(f"recovery.teacher {cfg.teacher!r}: {failed} of {calls} call(s) failed or gave no usable reply "
                        f"({failed / calls:.0%} > judge.max_failed_share {params.judge.max_failed_share:.0%}); the answered "
                        "prompts are cached: fix the endpoint and run `dvc repro` again to ask only the others")  # fmt: skip
