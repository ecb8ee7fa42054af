"""Stage `prepare`: every benchmark in params -> data/benchmarks/<name>.jsonl (one record schema)."""

from __future__ import annotations

import logging

from qmr import paths
from qmr.io import write_json, write_jsonl
from qmr.stages import UserError

log = logging.getLogger(__name__)


def _normalize_text(text: str) -> str:
    return " ".join(text.lower().split())


def run(params) -> None:
    built: dict[str, list[dict]] = {}
    for name, spec in params.benchmarks.items():
        if spec.source == "toy":
            from qmr.toy.problems import generate_split

            records = generate_split(spec.split, spec.size, params.seed, spec.families, cfg=params.prepare.toy)
        else:
            from qmr.benchmarks import load_benchmark

            records = load_benchmark(spec, name)
        built[name] = records

    toy = {n: r for n, r in built.items() if params.benchmarks[n].source == "toy"}
    if toy:
        from qmr.toy.problems import check_disjoint

        by_split: dict[str, list[dict]] = {}
        for n, recs in toy.items():
            by_split.setdefault(params.benchmarks[n].split, []).extend(recs)
        check_disjoint(by_split)

    # Eval problems never leak into training or mining pools (by id and by normalized text).
    removed: dict[str, int] = {}
    if params.prepare.dedupe:
        eval_ids = {r["id"] for n, recs in built.items() if params.benchmarks[n].role == "eval" for r in recs}
        eval_texts = {
            _normalize_text(r["question"]) for n, recs in built.items() if params.benchmarks[n].role == "eval" for r in recs
        }
        for n, recs in built.items():
            if params.benchmarks[n].role == "eval":
                continue
            keep = [r for r in recs if r["id"] not in eval_ids and _normalize_text(r["question"]) not in eval_texts]
            removed[n] = len(recs) - len(keep)
            built[n] = keep

    summary = {}
    for name, records in built.items():
        if not records:
            raise UserError(f"benchmarks.{name}: produced no records")
        write_jsonl(paths.benchmark(name), records)
        summary[name] = {"records": len(records), "role": params.benchmarks[name].role, "removed_overlap": removed.get(name, 0)}
        log.info("benchmark %s: %d records (%s)", name, len(records), params.benchmarks[name].role)
    write_json(paths.metrics("prepare"), summary)
