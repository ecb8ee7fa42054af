"""Failure cases: problems the full-precision model solves and the quantized variant fails.

With several samples per problem the per-id majority decides, exactly as in `qmr.evaluation`: the
majority answer is `qmr.grading.majority_vote` over the samples' ``pred`` (ties -> earliest sample),
the problem counts as solved when the earliest sample with that answer is ``correct``, and that sample's
trace is the representative shown to judges and annotators.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from qmr.evaluation import majority_trace
from qmr.steps import split_steps

log = logging.getLogger(__name__)


@dataclass
class Case:
    """Everything a judge or an annotator sees about one failure."""

    id: str
    variant: str
    benchmark: str
    question: str
    gold_answer: str
    gold_solution: str | None = None
    plan: list[dict] | None = None
    fp_text: str = ""
    fp_steps: list[str] = dataclasses.field(default_factory=list)
    fp_pred: str | None = None
    qt_text: str = ""
    qt_steps: list[str] = dataclasses.field(default_factory=list)
    qt_pred: str | None = None
    #: was the quantized answer graded correct? (False for failure cases; None when unknown, e.g. a
    #: ProcessBench item)
    qt_correct: bool | None = False
    #: ``sample`` index of the representative quantized trace (carried into judgments and labels so
    #: the silver stage truncates the very trace that was judged)
    qt_sample: int | None = None


#: benchmark kinds with a free-form answer (`qmr.params.BenchmarkSpec.kind`): what `judge.benchmarks: auto`
#: judges. Multiple-choice answers (``choice``) are left out: a letter gives a judge no derivation to
#: locate a first faulty step in, and a paid ensemble over them is money spent on nothing the
#: silver pairs can use.
JUDGEABLE_KINDS = ("math", "integer")


def judged_benchmarks(setting: str | list[str], generated: list[str], kinds: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """``(judged, skipped)`` for ``judge.benchmarks``: ``auto`` keeps the generated benchmarks whose
    kind is in `JUDGEABLE_KINDS`; a list keeps those names (in ``generated`` order). ``skipped`` maps
    each generated benchmark left out to the reason."""
    judged: list[str] = []
    skipped: dict[str, str] = {}
    for name in generated:
        if setting == "auto":
            if kinds[name] in JUDGEABLE_KINDS:
                judged.append(name)
            else:
                skipped[name] = f"kind {kinds[name]} (judge.benchmarks: auto judges {' and '.join(JUDGEABLE_KINDS)} answers)"
        elif name in setting:
            judged.append(name)
        else:
            skipped[name] = "not listed in judge.benchmarks"
    return judged, skipped


def case_to_dict(case: Case) -> dict[str, Any]:
    return dataclasses.asdict(case)


def case_from_dict(data: dict[str, Any]) -> Case:
    names = {f.name for f in dataclasses.fields(Case)}
    return Case(**{k: v for k, v in data.items() if k in names})


def input_hash(case: Case) -> str:
    """sha256 of everything a judge sees (not the id or variant: identical content shares answers)."""
    visible = {
        "question": case.question,
        "gold_answer": case.gold_answer,
        "gold_solution": case.gold_solution,
        "plan": case.plan,
        "fp_steps": case.fp_steps,
        "fp_pred": case.fp_pred,
        "qt_steps": case.qt_steps,
        "qt_pred": case.qt_pred,
        "qt_correct": case.qt_correct,
    }
    blob = json.dumps(visible, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _steps_of(trace: dict) -> list[str]:
    steps = trace.get("steps")
    return list(steps) if steps else split_steps(trace.get("text", ""))


def failure_cases(
    benchmark_records: list[dict],
    fp_traces: list[dict],
    qt_traces: list[dict],
    variant: str,
    kind: str = "math",
) -> list[Case]:
    """Cases (in benchmark order) where the fp majority is correct and the ``variant`` majority is wrong.

    ``kind`` is the grading kind used for the majority vote (`qmr.grading`). Problems missing from
    either trace set are skipped (logged).
    """
    fp_by: dict[str, list[dict]] = defaultdict(list)
    qt_by: dict[str, list[dict]] = defaultdict(list)
    for t in fp_traces:
        fp_by[str(t["id"])].append(t)
    for t in qt_traces:
        qt_by[str(t["id"])].append(t)
    out: list[Case] = []
    missing = 0
    for rec in benchmark_records:
        pid = str(rec["id"])
        if pid not in fp_by or pid not in qt_by:
            missing += 1
            continue
        fp = majority_trace(fp_by[pid], kind)
        qt = majority_trace(qt_by[pid], kind)
        if not (bool(fp.get("correct")) and not bool(qt.get("correct"))):
            continue
        out.append(
            Case(
                id=pid,
                variant=variant,
                benchmark=str(qt.get("benchmark", rec.get("source", ""))),
                question=rec["question"],
                gold_answer=str(rec["answer"]),
                gold_solution=rec.get("solution"),
                plan=rec.get("plan"),
                fp_text=fp.get("text", ""),
                fp_steps=_steps_of(fp),
                fp_pred=fp.get("pred"),
                qt_text=qt.get("text", ""),
                qt_steps=_steps_of(qt),
                qt_pred=qt.get("pred"),
                qt_correct=False,
                qt_sample=qt.get("sample"),
            )
        )
    if missing:
        log.warning("%s: %d benchmark problem(s) lack fp or quantized traces; skipped", variant, missing)
    return out
