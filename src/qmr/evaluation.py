"""Aggregate graded traces into accuracy, degradation, flips, format compliance and speed.

Degradation follows the paper: (acc_fp - acc_q) / acc_fp, in percent. A "flip" is a problem the
reference (fp) answers correctly and the variant does not, after majority vote over samples.
"""

from __future__ import annotations

from collections import defaultdict


def majority_trace(traces: list[dict], kind: str = "math") -> dict:
    """The representative trace of one problem's samples: the earliest sample whose answer is the
    majority-vote answer (`grading.majority_vote`; ties -> earliest), or the earliest sample when none
    matches. The one per-problem majority: accuracy (`majority_correct`) and the judged failure cases
    (`locate.cases.failure_cases`) both use it."""
    group = sorted(traces, key=lambda t: t.get("sample", 0))
    if len(group) == 1:
        return group[0]
    from qmr.grading import majority_vote

    winner = majority_vote([t.get("pred") for t in group], kind)
    return next((t for t in group if t.get("pred") == winner), group[0])


def majority_correct(traces: list[dict], kind: str = "math") -> dict[str, bool]:
    """Per problem id: is the majority-vote answer (`majority_trace`) correct?"""
    by_id: dict[str, list[dict]] = defaultdict(list)
    for t in traces:
        by_id[t["id"]].append(t)
    return {pid: bool(majority_trace(group, kind)["correct"]) for pid, group in by_id.items()}


def format_ok(trace: dict) -> bool:
    """Follows the step format: at least one step before a final extractable `The answer is N.`."""
    return trace.get("extraction") == "answer_is" and len(trace.get("steps", [])) >= 2


def summarize(traces: list[dict], kind: str = "math") -> dict:
    maj = majority_correct(traces, kind)
    n = len(maj)
    tokens = sum(t["tokens"] for t in traces)
    seconds = sum(t["seconds"] for t in traces)
    return {
        "problems": n,
        "accuracy": round(sum(maj.values()) / n, 4) if n else 0.0,
        "sample_accuracy": round(sum(t["correct"] for t in traces) / len(traces), 4) if traces else 0.0,
        "format_compliance": round(sum(format_ok(t) for t in traces) / len(traces), 4) if traces else 0.0,
        "invalid": sum(t.get("extraction") == "invalid" for t in traces),
        "mean_steps": round(sum(len(t.get("steps", [])) for t in traces) / len(traces), 3) if traces else 0.0,
        "tokens_per_s": round(tokens / seconds, 1) if seconds else 0.0,
    }


def compare(reference: list[dict], variant: list[dict], kind: str = "math") -> dict:
    """Degradation and flips of `variant` against `reference` on the same problems."""
    ref = majority_correct(reference, kind)
    var = majority_correct(variant, kind)
    common = sorted(set(ref) & set(var))
    acc_ref = sum(ref[i] for i in common) / len(common) if common else 0.0
    acc_var = sum(var[i] for i in common) / len(common) if common else 0.0
    return {
        "degradation_pct": round(100.0 * (acc_ref - acc_var) / acc_ref, 2) if acc_ref else 0.0,
        "flips": sum(ref[i] and not var[i] for i in common),
        "reverse_flips": sum(var[i] and not ref[i] for i in common),
    }


def recovery_ratio(acc_fp: float, acc_q: float, acc_r: float) -> float | None:
    """(acc_restored - acc_q) / (acc_fp - acc_q); None when the variant lost nothing to recover."""
    gap = acc_fp - acc_q
    if gap <= 0:
        return None
    return round((acc_r - acc_q) / gap, 4)
