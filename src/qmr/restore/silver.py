"""Silver Bullet pairs: (prompt, chosen, rejected) preference pairs for restoring a quantized model.

The paper's recipe (§3.2): for every problem the full-precision model solves and the quantized model
fails, take the quantized trace up to (not including) its first faulty step as the prompt, the quantized
model's own continuation from that step as *rejected*, and a teacher's continuation from the same
prompt that the grader verifies correct as *chosen*. ``recovery.subset`` selects which pairs:

- ``ALL``: every labelled failure, step-resumed; ``CE`` / ``RE`` / ``ME`` / ``EE``: only the failures
  whose consensus label has that category (conceptual, reasoning, method, execution).
- ``RAND_NS`` (control, no step resume): as many random problems of the mining pool as ``ALL`` would
  give, chosen = the gold solution, rejected = the quantized model's full trace, regardless of whether
  the quantized model failed.
- ``ALL_NS`` (control, no step resume): every labelled failure, chosen = the full gold solution,
  rejected = the full quantized trace.
- ``POOL`` (more signal, not targeted): every mining-pool problem the teacher solves, chosen = the
  teacher's solution (with ``teacher: fp``, the reference model's own greedy trace, graded correct;
  with an endpoint, its first of ``teacher_tries`` graded correct), rejected = the quantized trace
  (kept even when it is also right: for sft / kd / gkd only chosen matters). What distillation reads
  when "targeted vs more teacher signal" is asked at equal budget.

For the two ``_NS`` controls chosen is the benchmark's gold solution (``solution``, else its ``steps``
joined); only when a record has no gold solution is the full-precision trace used, and only if it is
graded correct. ``teacher`` of such a pair says which (``"gold"`` or ``"fp"``).

Everything here is pure: the teacher is a callable (``prompts, n -> n continuations per prompt``) that
the stage builds from the full-precision model's generation backend or an LLM endpoint
(`teacher_from_backend`), and nothing reads files.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qmr.config import SEED_MAX, Problem, field
from qmr.errors import UserError
from qmr.prompts import build_prompt, resume_prompt  # noqa: F401  (resume_prompt: re-exported, its home is qmr.prompts)
from qmr.registry import Registry

log = logging.getLogger(__name__)

CATEGORIES: tuple[str, ...] = ("CE", "RE", "ME", "EE")
# Recovery subsets (`recovery.subset`): name -> the pair builder ``(subset, Mining) -> pairs``.
SUBSETS = Registry(
    "recovery.subset",
    {
        "ALL": "qmr.restore.silver:step_resumed_pairs",
        **{c: "qmr.restore.silver:step_resumed_pairs" for c in CATEGORIES},
        "RAND_NS": "qmr.restore.silver:rand_ns_pairs",
        "ALL_NS": "qmr.restore.silver:all_ns_pairs",
        "POOL": "qmr.restore.silver:pool_pairs",
    },
)
Subset = SUBSETS.literal()
NO_ERROR = "no_error"

Teacher = Callable[[list[str], int], list[list[str]]]
"""``teacher(prompts, n)`` -> for each prompt, ``n`` sampled continuations (text after the prompt).

A local model's teacher gets the quantized model's own prompt (its chat template applied, for a chat
model) + the kept steps. A teacher with ``plain_prompts = True`` (the `llm` endpoint teacher: a chat
API applies its own template) gets the plain prompt (``Question: …\\nAnswer:\\n``) + the kept steps
instead, never text with the local model's template markup; the pair's ``prompt`` is the model's either way."""

Grader = Callable[[str, str], bool]
"""``grader(continuation, gold_answer)`` -> whether the continuation reaches the gold answer."""


class LeakageError(UserError, ValueError):
    """A silver pair would be built from a problem of an evaluation split."""


@dataclass
class RecoveryConfig:
    """Which Silver Bullet pairs to build (``recovery`` in params.yaml)."""

    subset: Subset = field(
        "ALL", help="ALL | CE | RE | ME | EE (step-resumed failures) | RAND_NS | ALL_NS (no-resume controls) | "
        "POOL (every mining-pool problem the teacher solves)"
    )
    max_pairs: int = field(0, help="cap on the number of pairs (0 = all)")
    teacher: str = field(
        "fp", help="who writes the chosen continuation: fp (the full-precision model) or an llm endpoint name"
    )
    teacher_tries: int = field(
        4, help="sampled teacher continuations per prompt; the first one graded correct is chosen"
    )
    teacher_temperature: float = field(0.7, help="teacher sampling temperature (> 0 when teacher_tries > 1)")
    seed: int = field(0, help="seed of the pair selection (and of the teacher's sampling)", ge=0, le=SEED_MAX)
    dedupe: bool = field(True, help="drop pairs with the same (prompt, chosen, rejected)")
    exclude_families: list[str] = field(
        default_factory=list,
        help="problem families held out as the general-ability control, never used for pairs",
    )
    variants: list[str] = field(
        default_factory=list, help="quantized variants (keys of quantize.variants) to build pairs for and restore"
    )

    def check(self, key: str = "") -> list[Problem]:
        p = f"{key}." if key else ""
        out: list[Problem] = []
        if self.max_pairs < 0:
            out.append(Problem(f"{p}max_pairs", self.max_pairs, "an integer >= 0 (0 = all)"))
        if not self.teacher or not self.teacher.strip():
            out.append(Problem(f"{p}teacher", self.teacher, "'fp' or the name of an llm endpoint"))
        if self.teacher_tries < 1:
            out.append(Problem(f"{p}teacher_tries", self.teacher_tries, "an integer >= 1"))
        if self.teacher_temperature < 0:
            out.append(Problem(f"{p}teacher_temperature", self.teacher_temperature, "a number >= 0"))
        elif self.teacher_tries > 1 and self.teacher_temperature == 0:
            out.append(
                Problem(
                    f"{p}teacher_temperature",
                    self.teacher_temperature,
                    "> 0 when teacher_tries > 1 (greedy tries are identical)",
                )
            )
        return out


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def default_grader(kind: str = "math") -> Grader:
    """Grade a continuation with `qmr.grading`: extract its answer and compare it with the gold answer."""

    def grade(continuation: str, gold: str) -> bool:
        from qmr.grading import grade

        return grade(continuation, gold, kind)[1]

    return grade


def teacher_from_backend(
    backend: Any,
    *,
    temperature: float,
    top_p: float = 1.0,
    max_new_tokens: int = 96,
    seed: int = 0,
    progress: bool = False,
    generate: Callable[..., Any] | None = None,
) -> Teacher:
    """Adapt a `qmr.generation.base.Backend` (e.g. the full-precision model) into a `Teacher`.

    ``generate`` replaces ``backend.generate`` (same keywords), e.g. with a resumable wrapper."""
    run = generate or backend.generate

    def teacher(prompts: list[str], n: int) -> list[list[str]]:
        if not prompts:
            return []
        out = run(
            prompts,
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            seed=seed,
            progress=progress,
        )
        return [[c.text for c in comps] for comps in out]

    return teacher


def _trace_steps(trace: Mapping[str, Any]) -> list[str]:
    steps = trace.get("steps")
    if steps is None:
        from qmr.steps import split_steps

        steps = split_steps(trace.get("text", ""))
    return [str(s) for s in steps]


def _gold_solution(record: Mapping[str, Any]) -> str | None:
    sol = record.get("solution")
    if isinstance(sol, str) and sol.strip():
        return sol.strip()
    steps = record.get("steps")
    if isinstance(steps, list) and steps:
        return "\n".join(str(s) for s in steps)
    return None


def _index_traces(traces: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for t in traces:
        out.setdefault(str(t["id"]), []).append(t)
    for group in out.values():
        group.sort(key=lambda t: int(t.get("sample", 0) or 0))
    return out


def _pick_trace(
    group: list[Mapping[str, Any]], sample: Any = None, want_wrong: bool = True
) -> Mapping[str, Any] | None:
    """The trace a label refers to: its ``sample`` when given, else the first wrong one, else the first."""
    if not group:
        return None
    if sample is not None:
        for t in group:
            if t.get("sample", 0) == sample:
                return t
        return None
    if want_wrong:
        for t in group:
            if not t.get("correct", False):
                return t
    return group[0]


def _correct_fp_text(group: list[Mapping[str, Any]] | None) -> str | None:
    for t in group or []:
        if t.get("correct"):
            steps = _trace_steps(t)
            text = "\n".join(steps) if steps else str(t.get("text", "")).strip()
            if text:
                return text
    return None


def _format_ids(ids: Iterable[str], limit: int = 20) -> str:
    ids = sorted(set(ids))
    shown = ", ".join(ids[:limit])
    return shown + (f", … ({len(ids) - limit} more)" if len(ids) > limit else "")


def check_leakage(ids: Iterable[str], eval_ids: set[str] | frozenset[str], what: str = "silver pair") -> None:
    """Raise `LeakageError` naming every id that is also in the evaluation set."""
    bad = sorted({str(i) for i in ids} & {str(e) for e in eval_ids})
    if bad:
        raise LeakageError(
            f"leakage: {len(bad)} {what} problem id(s) are in the evaluation set and may not be used for "
            f"training: {_format_ids(bad)}. Build pairs from the mining pool only (role: mine)."
        )


def _not_a_failure(label: Mapping[str, Any]) -> str | None:
    """Why a label gives no failure to mine (the ``skipped`` key), or None for an accepted error:
    ``no_error`` (accepted "no error"), ``abstained`` (every judge abstained: rule ``abstain_all``),
    ``escalated`` (judges disagreed or too few spoke; awaiting a human verdict), ``no_category`` (an error
    type outside the taxonomy's categories)."""
    etype = label.get("primary_error_type")
    if etype == NO_ERROR:
        return "no_error"
    if etype is not None and label.get("category") in CATEGORIES:
        return None
    if label.get("rule") == "abstain_all":
        return "abstained"
    if etype is None:
        return "escalated"  # rule escalated (needs_human), or a label no rule accepted
    return "no_category"


def _new_stats(subset: str) -> dict[str, Any]:
    return {
        "subset": subset,
        "pairs": 0,
        "candidates": 0,
        "available": {},
        "dropped_unverified": 0,
        "teacher_prompts": 0,
        "skipped": Counter(),
        "by_category": Counter(),
        "by_error_type": Counter(),
        "chosen_source": Counter(),
        "empty": False,
        "message": "",
    }


def _finish_stats(stats: dict[str, Any], pairs: list[dict]) -> dict[str, Any]:
    stats["pairs"] = len(pairs)
    for p in pairs:
        if p.get("category"):
            stats["by_category"][p["category"]] += 1
        if p.get("error_type"):
            stats["by_error_type"][p["error_type"]] += 1
        stats["chosen_source"][p["teacher"]] += 1
    for key in ("skipped", "by_category", "by_error_type", "chosen_source"):
        stats[key] = dict(sorted(stats[key].items()))
    if not pairs:
        stats["empty"] = True
        why = []
        if stats["candidates"] == 0:
            why.append(
                "no candidate problems (no labelled failures of this kind)"
                if stats["subset"] != "RAND_NS"
                else "an empty mining pool or size 0"
            )
        if stats["dropped_unverified"]:
            why.append(
                f"{stats['dropped_unverified']} candidate(s) dropped: no teacher continuation graded correct"
            )
        if stats["skipped"]:
            why.append("skipped: " + ", ".join(f"{k}={v}" for k, v in stats["skipped"].items()))
            if stats["skipped"].get("abstained") or stats["skipped"].get("escalated"):
                why.append("abstained/escalated labels are mined once an annotator decides them (packets under data/annotation/)")
        stats["message"] = f"subset {stats['subset']} yields no pairs: " + (
            "; ".join(why) or "nothing selected"
        )
        log.warning(stats["message"])
    else:
        stats["message"] = (
            f"subset {stats['subset']}: {len(pairs)} pair(s) from {stats['candidates']} candidate(s)"
        )
    return stats


# --------------------------------------------------------------------------------------------------
# the builder
# --------------------------------------------------------------------------------------------------


def build_pairs(
    subset: str,
    labels: Sequence[Mapping[str, Any]],
    qt_traces: Sequence[Mapping[str, Any]],
    fp_traces: Sequence[Mapping[str, Any]],
    benchmark_records: Sequence[Mapping[str, Any]],
    teacher: Teacher | None,
    cfg: RecoveryConfig,
    eval_ids: set[str] | frozenset[str],
    *,
    kind: str = "math",
    size: int | None = None,
    grader: Grader | None = None,
) -> tuple[list[dict], dict[str, Any]]:
    """Build the Silver Bullet pairs of ``subset``; return ``(pairs, stats)``.

    ``labels`` are the consensus labels of the quantized variant's failures, ``qt_traces`` / ``fp_traces``
    the quantized and full-precision traces on the mining pool, ``benchmark_records`` the mining pool
    (question, gold answer, gold solution, family). ``teacher`` is only called for the step-resumed
    subsets. ``kind`` is the benchmark's answer kind for grading; ``grader`` overrides the default
    (`qmr.grading`). ``size`` is the RAND_NS target (default: the number of ALL candidates, capped by
    ``max_pairs``; pass ALL's final pair count for an exact match). A subset that yields nothing returns
    ``[]`` with ``stats["empty"]`` and a message; a problem id in ``eval_ids`` raises `LeakageError`.
    """
    builder = SUBSETS.load(subset)
    problems = cfg.check("recovery")
    if problems:
        raise ValueError("; ".join(str(p) for p in problems))
    grade = grader or default_grader(kind)
    stats = _new_stats(subset)
    excluded = set(cfg.exclude_families)
    records = {str(r["id"]): r for r in benchmark_records}
    qt_by_id = _index_traces(qt_traces)
    fp_by_id = _index_traces(fp_traces)

    # Labelled failures usable for any subset: a real error (not no_error), a record, a family not held out.
    failures: list[Mapping[str, Any]] = []
    skipped: Counter = Counter()
    for lab in sorted(labels, key=lambda x: (str(x["id"]), str(x.get("sample", "")))):
        pid = str(lab["id"])
        reason = _not_a_failure(lab)
        if reason is not None:
            skipped[reason] += 1
            continue
        rec = records.get(pid)
        if rec is None:
            skipped["missing_record"] += 1
            continue
        if rec.get("family") is not None and rec.get("family") in excluded:
            skipped["excluded_family"] += 1
            continue
        failures.append(lab)
    stats["available"] = {
        "ALL": len(failures),
        **{c: sum(1 for f in failures if f["category"] == c) for c in CATEGORIES},
    }
    if subset != "RAND_NS":
        stats["skipped"].update(skipped)

    mining = Mining(failures, records, qt_by_id, fp_by_id, teacher, cfg, grade, stats, eval_ids, excluded, size)
    pairs = builder(subset, mining)

    check_leakage((p["id"] for p in pairs), eval_ids)
    pairs.sort(key=lambda p: (p["id"], p.get("sample", 0) or 0))
    return pairs, _finish_stats(stats, pairs)


@dataclass
class Mining:
    """What a pair builder works from: the usable labelled failures and the mining pool's traces."""

    failures: list[Mapping[str, Any]]
    records: dict[str, Mapping[str, Any]]
    qt_by_id: dict[str, list[Mapping[str, Any]]]
    fp_by_id: dict[str, list[Mapping[str, Any]]]
    teacher: Teacher | None
    cfg: RecoveryConfig
    grade: Grader
    stats: dict[str, Any]
    eval_ids: Iterable[str] | None
    excluded: set[str]
    size: int | None


def step_resumed_pairs(subset: str, m: Mining) -> list[dict]:
    """ALL / CE / RE / ME / EE: resume from the prefix before the first faulty step (the paper)."""
    chosen_labels = [f for f in m.failures if subset == "ALL" or f["category"] == subset]
    check_leakage((lab["id"] for lab in chosen_labels), m.eval_ids)
    return _step_resumed(subset, chosen_labels, m.records, m.qt_by_id, m.teacher, m.cfg, m.grade, m.stats)


def all_ns_pairs(subset: str, m: Mining) -> list[dict]:
    """ALL_NS (control): every labelled failure, no step resume."""
    check_leakage((lab["id"] for lab in m.failures), m.eval_ids)
    return _all_ns(m.failures, m.records, m.qt_by_id, m.fp_by_id, m.cfg, m.stats)


def rand_ns_pairs(subset: str, m: Mining) -> list[dict]:
    """RAND_NS (control): as many random mining-pool problems as ALL would use, no step resume."""
    excluded = m.excluded
    pool = sorted(
        pid
        for pid, rec in m.records.items()
        if pid in m.qt_by_id and not (rec.get("family") is not None and rec.get("family") in excluded)
    )
    n_excluded = sum(
        1 for rec in m.records.values() if rec.get("family") is not None and rec.get("family") in excluded
    )
    if n_excluded:
        m.stats["skipped"]["excluded_family"] += n_excluded
    check_leakage(pool, m.eval_ids, what="mining-pool")
    target = m.size if m.size is not None else len(m.failures)
    if m.cfg.max_pairs:
        target = min(target, m.cfg.max_pairs)
    m.stats["target_size"] = target
    return _rand_ns(pool, target, m.records, m.qt_by_id, m.fp_by_id, m.cfg, m.stats)


def pool_pairs(subset: str, m: Mining) -> list[dict]:
    """POOL: every mining-pool problem the teacher solves, whole solution, no step resume."""
    pool = sorted(
        pid
        for pid, rec in m.records.items()
        if pid in m.qt_by_id and not (rec.get("family") is not None and rec.get("family") in m.excluded)
    )
    n_excluded = sum(
        1 for rec in m.records.values() if rec.get("family") is not None and rec.get("family") in m.excluded
    )
    if n_excluded:
        m.stats["skipped"]["excluded_family"] += n_excluded
    check_leakage(pool, m.eval_ids, what="mining-pool")
    order = list(pool)
    random.Random(m.cfg.seed).shuffle(order)
    if m.cfg.max_pairs:
        order = order[: m.cfg.max_pairs]
    m.stats["candidates"] = len(order)
    if m.cfg.teacher == "fp":
        solutions = {pid: _correct_fp_text(m.fp_by_id.get(pid)) for pid in order}
    else:
        if m.teacher is None:
            raise ValueError("recovery.subset POOL with an endpoint teacher needs a teacher; got none")
        prompts = [build_prompt(str(m.records[pid]["question"])) for pid in order]
        m.stats["teacher_prompts"] += len(prompts)
        outs = m.teacher(prompts, m.cfg.teacher_tries)
        solutions = {
            pid: next((c.strip() for c in conts[: m.cfg.teacher_tries] if c and c.strip()
                       and m.grade(c, str(m.records[pid]["answer"]))), None)  # fmt: skip
            for pid, conts in zip(order, outs, strict=True)
        }
    pairs: list[dict] = []
    seen: set[tuple[str, str, str]] = set()
    for pid in order:
        chosen = solutions[pid]
        if chosen is None:
            m.stats["dropped_unverified"] += 1
            continue
        trace = _pick_trace(m.qt_by_id[pid], want_wrong=False)
        steps = _trace_steps(trace)  # type: ignore[arg-type]
        pair = {
            "id": pid,
            "variant": trace.get("variant"),  # type: ignore[union-attr]
            "subset": subset,
            "prompt": trace.get("prompt") or build_prompt(str(m.records[pid]["question"])),  # type: ignore[union-attr]
            "prefix_steps": [],
            "chosen": chosen,
            "rejected": "\n".join(steps) if steps else str(trace.get("text", "")).strip(),  # type: ignore[union-attr]
            "error_type": None,
            "category": None,
            "error_step": None,
            "teacher": m.cfg.teacher,
            "sample": trace.get("sample", 0),  # type: ignore[union-attr]
            "benchmark": trace.get("benchmark"),  # type: ignore[union-attr]
        }
        key = (pair["prompt"], pair["chosen"], pair["rejected"])
        if m.cfg.dedupe and key in seen:
            m.stats["skipped"]["duplicate"] += 1
            continue
        seen.add(key)
        pairs.append(pair)
    m.stats["rejected_same_as_chosen"] = sum(p["chosen"].strip() == p["rejected"].strip() for p in pairs)
    return pairs


def _accept(pair: dict, seen: set[tuple[str, str, str]], cfg: RecoveryConfig, stats: dict[str, Any]) -> bool:
    if pair["chosen"].strip() == pair["rejected"].strip():
        stats["skipped"]["same_as_chosen"] += 1
        return False
    key = (pair["prompt"], pair["chosen"], pair["rejected"])
    if cfg.dedupe and key in seen:
        stats["skipped"]["duplicate"] += 1
        return False
    seen.add(key)
    return True


def _step_resumed(
    subset: str,
    labels: list[Mapping[str, Any]],
    records: dict[str, Mapping[str, Any]],
    qt_by_id: dict[str, list[Mapping[str, Any]]],
    teacher: Teacher | None,
    cfg: RecoveryConfig,
    grade: Grader,
    stats: dict[str, Any],
) -> list[dict]:
    skipped: Counter = stats["skipped"]
    candidates: list[dict] = []
    for lab in labels:
        pid = str(lab["id"])
        trace = _pick_trace(qt_by_id.get(pid, []), lab.get("sample"))
        if trace is None:
            skipped["missing_trace"] += 1
            continue
        steps = _trace_steps(trace)
        try:
            k = int(lab.get("error_step"))
        except (TypeError, ValueError):
            k = 0
        if not 1 <= k <= len(steps):
            skipped["invalid_error_step"] += 1
            continue
        rec = records[pid]
        problem_prompt = trace.get("prompt") or build_prompt(str(rec["question"]))
        prefix = steps[: k - 1]
        candidates.append(
            {
                "id": pid,
                "variant": lab.get("variant", trace.get("variant")),
                "subset": subset,
                "prompt": resume_prompt(problem_prompt, prefix),
                "teacher_prompt": resume_prompt(build_prompt(str(rec["question"])), prefix),  # popped below
                "prefix_steps": prefix,
                "chosen": None,
                "rejected": "\n".join(steps[k - 1 :]),
                "error_type": lab.get("primary_error_type"),
                "category": lab.get("category"),
                "error_step": k,
                "teacher": cfg.teacher,
                "sample": trace.get("sample", 0),
                "benchmark": trace.get("benchmark"),
                "answer": str(rec["answer"]),
            }
        )
    random.Random(cfg.seed).shuffle(candidates)
    stats["candidates"] = len(candidates)
    if candidates and teacher is None:
        raise ValueError(f"recovery.subset {subset} is step-resumed and needs a teacher; got none")

    pairs: list[dict] = []
    seen: set[tuple[str, str, str]] = set()
    pos = 0
    # Process in chunks so a small max_pairs does not pay for the teacher on every candidate.
    while pos < len(candidates) and (not cfg.max_pairs or len(pairs) < cfg.max_pairs):
        chunk = candidates[pos : pos + (cfg.max_pairs - len(pairs) if cfg.max_pairs else len(candidates))]
        pos += len(chunk)
        plain = [c.pop("teacher_prompt") for c in chunk]
        prompts = plain if getattr(teacher, "plain_prompts", False) else [c["prompt"] for c in chunk]
        stats["teacher_prompts"] += len(prompts)
        outs = teacher(prompts, cfg.teacher_tries)  # type: ignore[misc]
        if len(outs) != len(prompts):
            raise ValueError(f"teacher returned {len(outs)} result lists for {len(prompts)} prompts")
        for cand, conts in zip(chunk, outs, strict=True):
            answer = cand.pop("answer")
            rejected = cand["rejected"].strip()
            good = next(
                (
                    c.strip()
                    for c in list(conts)[: cfg.teacher_tries]
                    if c and c.strip() and c.strip() != rejected and grade(c, answer)
                ),
                None,
            )
            if good is None:
                stats["dropped_unverified"] += 1
                continue
            cand["chosen"] = good
            if _accept(cand, seen, cfg, stats):
                pairs.append(cand)
                if cfg.max_pairs and len(pairs) >= cfg.max_pairs:
                    break
    return pairs


def _ns_pair(
    subset: str,
    pid: str,
    trace: Mapping[str, Any],
    rec: Mapping[str, Any],
    fp_group: list[Mapping[str, Any]] | None,
    label: Mapping[str, Any] | None,
    stats: dict[str, Any],
) -> dict | None:
    chosen, source = _gold_solution(rec), "gold"
    if chosen is None:
        chosen, source = _correct_fp_text(fp_group), "fp"
    if chosen is None:
        stats["skipped"]["no_gold"] += 1
        return None
    steps = _trace_steps(trace)
    rejected = "\n".join(steps) if steps else str(trace.get("text", "")).strip()
    return {
        "id": pid,
        "variant": (label or {}).get("variant", trace.get("variant")),
        "subset": subset,
        "prompt": trace.get("prompt") or build_prompt(str(rec["question"])),
        "prefix_steps": [],
        "chosen": chosen,
        "rejected": rejected,
        "error_type": (label or {}).get("primary_error_type"),
        "category": (label or {}).get("category"),
        "error_step": (label or {}).get("error_step"),
        "teacher": source,
        "sample": trace.get("sample", 0),
        "benchmark": trace.get("benchmark"),
    }


def _all_ns(
    failures: list[Mapping[str, Any]],
    records: dict[str, Mapping[str, Any]],
    qt_by_id: dict[str, list[Mapping[str, Any]]],
    fp_by_id: dict[str, list[Mapping[str, Any]]],
    cfg: RecoveryConfig,
    stats: dict[str, Any],
) -> list[dict]:
    order = list(failures)
    random.Random(cfg.seed).shuffle(order)
    stats["candidates"] = len(order)
    pairs: list[dict] = []
    seen: set[tuple[str, str, str]] = set()
    for lab in order:
        pid = str(lab["id"])
        trace = _pick_trace(qt_by_id.get(pid, []), lab.get("sample"))
        if trace is None:
            stats["skipped"]["missing_trace"] += 1
            continue
        pair = _ns_pair("ALL_NS", pid, trace, records[pid], fp_by_id.get(pid), lab, stats)
        if pair is not None and _accept(pair, seen, cfg, stats):
            pairs.append(pair)
            if cfg.max_pairs and len(pairs) >= cfg.max_pairs:
                break
    return pairs


def _rand_ns(
    pool: list[str],
    target: int,
    records: dict[str, Mapping[str, Any]],
    qt_by_id: dict[str, list[Mapping[str, Any]]],
    fp_by_id: dict[str, list[Mapping[str, Any]]],
    cfg: RecoveryConfig,
    stats: dict[str, Any],
) -> list[dict]:
    order = list(pool)
    random.Random(cfg.seed).shuffle(order)
    stats["candidates"] = min(len(order), target)
    pairs: list[dict] = []
    seen: set[tuple[str, str, str]] = set()
    for pid in order:
        if len(pairs) >= target:
            break
        trace = _pick_trace(qt_by_id[pid], want_wrong=False)
        pair = _ns_pair("RAND_NS", pid, trace, records[pid], fp_by_id.get(pid), None, stats)  # type: ignore[arg-type]
        if pair is not None and _accept(pair, seen, cfg, stats):
            pairs.append(pair)
    if len(pairs) < target:
        log.warning(
            "RAND_NS: only %d of the %d size-matched pairs could be built from the pool", len(pairs), target
        )
    return pairs
