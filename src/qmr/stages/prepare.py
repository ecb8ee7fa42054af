"""Stage `prepare`: every benchmark in params -> data/benchmarks/<name>.jsonl (one record schema)."""

from __future__ import annotations

import logging

from qmr import paths
from qmr.errors import UserError
from qmr.io import write_json, write_jsonl

log = logging.getLogger(__name__)


def _normalize_text(text: str) -> str:
    return " ".join(text.lower().split())


def _toy_records(spec, seed: int, cfg, exclude: set[str], name: str) -> list[dict]:
    """``spec.size`` problems of the toy split, skipping ``exclude`` (ids another eval benchmark of the
    same split already holds). The generator is a deterministic stream, so asking for more and
    filtering keeps the records it would have given anyway, in order."""
    from qmr.toy.problems import generate_split

    try:
        records = generate_split(spec.split, spec.size + len(exclude), seed, spec.families, cfg=cfg)
    except ValueError as exc:  # the number ranges cannot make that many distinct problems
        raise UserError(f"benchmarks.{name}.size: got {spec.size}; {exc}") from None
    return [r for r in records if r["id"] not in exclude][: spec.size]


def run(params) -> None:
    hub = {name: spec for name, spec in params.benchmarks.items() if spec.source == "hub"}
    if hub:  # ask the hub about every dataset first (metadata, seconds): one line per problem, nothing loaded
        from qmr.hub import probe

        problems = [p for name, spec in hub.items() if (p := probe(f"benchmarks.{name}", spec.hub_id, spec.revision, "dataset"))]
        if problems:
            raise UserError("\n".join(problems))
    built: dict[str, list[dict]] = {}
    eval_ids: dict[str, str] = {}  # id -> the eval benchmark that holds it
    for name, spec in params.benchmarks.items():
        if spec.source == "toy":
            taken = {i for i, owner in eval_ids.items() if params.benchmarks[owner].source == "toy"} if spec.role == "eval" else set()
            records = _toy_records(spec, params.seed, params.prepare.toy, taken, name)
        else:
            from qmr.benchmarks import load_benchmark

            records = load_benchmark(spec, name, params.seed)
        if spec.role == "eval":  # one problem, one evaluation benchmark: otherwise it is counted twice
            for r in records:
                owner = eval_ids.setdefault(r["id"], name)
                if owner != name:
                    raise UserError(f"benchmarks.{name}: problem id {r['id']!r} is also in eval benchmark {owner!r}; "
                                    "allowed: each id in one evaluation benchmark (drop it from one of them)")  # fmt: skip
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
