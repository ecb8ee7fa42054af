"""Metrics of one variant's judging and voting (``metrics/vote.json`` entries) and plot rows.

``escalated`` counts labels still waiting for a human; ``escalated_total`` also those a human verdict
already resolved. Shares are fractions in [0, 1] of the *decided error labels* (accepted or human, type not
``no_error``). First-error position is reported as the absolute step (1-indexed) and as
``step / len(qt_steps)``. Pairwise agreement is on type among cases both judges voted on (spoke);
Fleiss' kappa is over the cases every judge voted on, on the 8 answers (7 types + no_error).
Accuracy against ground truth (toy: `qmr.locate.offline.ground_truth_for`) counts a non-voting judge
(abstain/invalid/absent) as wrong and also reports its accuracy among the cases it answered.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from itertools import combinations
from typing import Any

from qmr.locate.cases import Case
from qmr.locate.judges import speaks
from qmr.locate.taxonomy import ANSWERS, CATEGORIES, NO_ERROR, TYPES
from qmr.locate.vote import ACCEPTED_RULES, RULES

GroundTruth = dict[str, tuple[int | None, str | None]]

DECIDED_RULES = ACCEPTED_RULES


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


def _share(n: int, d: int) -> float:
    return round(n / d, 4) if d else 0.0


def decided_errors(labels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        lab
        for lab in labels
        if lab["rule"] in DECIDED_RULES and lab.get("primary_error_type") not in (None, NO_ERROR)
    ]


def fleiss_kappa(table: list[list[int]]) -> float | None:
    """Fleiss' kappa of an items x categories count table (same number of raters per item)."""
    if not table:
        return None
    n_raters = sum(table[0])
    if n_raters < 2 or any(sum(row) != n_raters for row in table):
        return None
    n_items = len(table)
    n_cat = len(table[0])
    p_j = [sum(row[j] for row in table) / (n_items * n_raters) for j in range(n_cat)]
    p_i = [(sum(c * c for c in row) - n_raters) / (n_raters * (n_raters - 1)) for row in table]
    p_bar = sum(p_i) / n_items
    p_e = sum(p * p for p in p_j)
    if p_e >= 1.0:
        return 1.0 if p_bar >= 1.0 else None
    return (p_bar - p_e) / (1 - p_e)


def _position_stats(labels: list[dict[str, Any]], lengths: dict[str, int]) -> dict[str, Any]:
    steps = [lab["error_step"] for lab in labels if lab.get("error_step") is not None]
    fracs = [
        lab["error_step"] / lengths[lab["id"]]
        for lab in labels
        if lab.get("error_step") is not None and lengths.get(lab["id"])
    ]
    return {
        "n": len(steps),
        "mean": _r(statistics.fmean(steps)) if steps else None,
        "median": _r(float(statistics.median(steps))) if steps else None,
        "mean_fraction": _r(statistics.fmean(fracs)) if fracs else None,
        "median_fraction": _r(float(statistics.median(fracs))) if fracs else None,
    }


def _accuracy(
    pairs: list[tuple[tuple[int | None, str | None] | None, tuple[int | None, str | None]]],
) -> dict[str, Any]:
    """pairs of (prediction or None when not answering, truth)."""
    n = len(pairs)
    answered = [(p, t) for p, t in pairs if p is not None]
    step_ok = sum(p[0] == t[0] for p, t in answered)
    type_ok = sum(p[1] == t[1] for p, t in answered)
    both_ok = sum(p == t for p, t in answered)
    return {
        "n": n,
        "coverage": _share(len(answered), n),
        "step_accuracy": _share(step_ok, n),
        "type_accuracy": _share(type_ok, n),
        "exact_accuracy": _share(both_ok, n),
        "step_accuracy_answered": _share(step_ok, len(answered)),
        "type_accuracy_answered": _share(type_ok, len(answered)),
    }


def vote_metrics(
    labels: list[dict[str, Any]],
    judgments: list[dict[str, Any]],
    cases: list[Case],
    ground_truth: GroundTruth | None = None,
) -> dict[str, Any]:
    lengths = {c.id: len(c.qt_steps) for c in cases}
    decided = decided_errors(labels)
    n_dec = len(decided)
    type_counts = Counter(lab["primary_error_type"] for lab in decided)
    cat_counts = Counter(lab["category"] for lab in decided)
    rules = Counter(lab["rule"] for lab in labels)
    out: dict[str, Any] = {
        "cases": len(labels),
        "decided": n_dec,
        "no_error": sum(
            lab["rule"] in DECIDED_RULES and lab.get("primary_error_type") == NO_ERROR for lab in labels
        ),
        "undecided": sum(lab["rule"] not in DECIDED_RULES for lab in labels),
        "categories": {
            c: {"count": cat_counts.get(c, 0), "share": _share(cat_counts.get(c, 0), n_dec)}
            for c in CATEGORIES
        },
        "types": {
            t: {"count": type_counts.get(t, 0), "share": _share(type_counts.get(t, 0), n_dec)} for t in TYPES
        },
        "first_error_step": _position_stats(decided, lengths),
        "rules": {
            r: rules.get(r, 0) for r in RULES
        },
        "escalated": sum(bool(lab.get("needs_human")) for lab in labels),
        "escalated_total": sum(
            lab["rule"] in ("escalated", "abstain_all")
            or (lab.get("machine") or {}).get("rule") in ("escalated", "abstain_all")
            for lab in labels
        ),
        "escalation_rate": _share(sum(bool(lab.get("needs_human")) for lab in labels), len(labels)),
        "audit": sum(bool(lab.get("audit")) for lab in labels),
        "audit_agrees": sum(bool(lab.get("audit_agrees")) for lab in labels),
    }
    # per judge
    by_judge: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for j in judgments:
        by_judge[j["judge"]].append(j)
    judges_out: dict[str, Any] = {}
    for name, js in by_judge.items():
        n = len(js)
        judges_out[name] = {
            "judgments": n,
            "valid_rate": _share(sum(bool(j.get("valid")) for j in js), n),
            "abstain_rate": _share(sum(bool(j.get("valid")) and bool(j.get("abstain")) for j in js), n),
            "invalid": sum(not j.get("valid") for j in js),
            "failed_calls": sum(bool(j.get("error")) for j in js),
            "calls": sum(int(j.get("calls") or 0) for j in js),
            "retries": sum(int(j.get("retries") or 0) for j in js),
            "tokens_in": sum(int(j.get("tokens_in") or 0) for j in js),
            "tokens_out": sum(int(j.get("tokens_out") or 0) for j in js),
            "cost": round(sum(float(j.get("cost") or 0.0) for j in js), 6),
            "rollouts": sum(int(j.get("rollouts") or 0) for j in js),  # (their seconds: metrics/speed/vote.json)
        }
    out["judges"] = judges_out
    # agreement
    votes: dict[str, dict[str, str]] = defaultdict(dict)  # case -> judge -> type
    for j in judgments:
        if speaks(j) and j["primary_error_type"] is not None:  # a typeless step-only vote has no type to agree on
            votes[str(j["id"])][j["judge"]] = j["primary_error_type"]
    steps: dict[str, dict[str, int | None]] = defaultdict(dict)  # case -> judge -> step (None: no error)
    for j in judgments:
        if speaks(j):
            steps[str(j["id"])][j["judge"]] = None if j.get("primary_error_type") == NO_ERROR else j.get("error_step")
    names = sorted(by_judge)
    pairwise: dict[str, Any] = {}
    for a, b in combinations(names, 2):
        both = [v for v in votes.values() if a in v and b in v]
        both_steps = [v for v in steps.values() if a in v and b in v]
        pairwise[f"{a}_vs_{b}"] = {
            "n": len(both),
            "agreement": _share(sum(v[a] == v[b] for v in both), len(both)),
            "n_step": len(both_steps),
            "step_agreement": _share(sum(v[a] == v[b] for v in both_steps), len(both_steps)),
        }
    # Fleiss' kappa on the type, over the judges that give types (a step-only judge never does)
    typed = [n for n in names if any(j.get("primary_error_type") is not None for j in by_judge[n])]
    full = [v for v in votes.values() if len(typed) >= 2 and all(n in v for n in typed)]
    table = [[sum(v[n] == cat for n in typed) for cat in ANSWERS] for v in full]
    out["agreement"] = {
        "pairwise": pairwise,
        "fleiss_kappa": _r(fleiss_kappa(table)),
        "fleiss_cases": len(full),
        "fleiss_judges": typed,
    }
    # accuracy against ground truth
    if ground_truth is not None:
        acc: dict[str, Any] = {}
        judg_by = {(str(j["id"]), j["judge"]): j for j in judgments}
        # judges that saw only some cases (cheap-first sent them only the undecided and a check sample)
        costly_absent = {n for n in names if len(by_judge[n]) < len(cases)}
        ids = [c.id for c in cases if c.id in ground_truth and ground_truth[c.id][1] is not None]
        for name in names:
            pairs = []
            for cid in ids:
                j = judg_by.get((cid, name))
                if j is None and name in costly_absent:
                    continue  # not sent to this judge (cheap-first): scored on the cases it saw
                pred = (
                    (
                        j.get("error_step") if j["primary_error_type"] != NO_ERROR else None,
                        j["primary_error_type"],
                    )
                    if speaks(j)
                    else None
                )  # type: ignore[union-attr]
                pairs.append((pred, ground_truth[cid]))
            acc[name] = _accuracy(pairs)
        lab_by = {str(lab["id"]): lab for lab in labels}
        pairs = []
        for cid in ids:
            lab = lab_by.get(cid)
            ok = lab is not None and lab["rule"] in DECIDED_RULES
            pairs.append(((lab["error_step"], lab["primary_error_type"]) if ok else None, ground_truth[cid]))  # type: ignore[index]
        acc["ensemble"] = _accuracy(pairs)
        out["accuracy"] = acc
    return out


# --------------------------------------------------------------------------------------------------
# plot rows (lists of dicts, for CSV)


def error_type_rows(labels: list[dict[str, Any]], variant: str | None = None) -> list[dict[str, Any]]:
    decided = decided_errors(labels)
    counts = Counter(lab["primary_error_type"] for lab in decided)
    return [
        {
            **({"variant": variant} if variant is not None else {}),
            "category": next(c for c, (_, ts) in CATEGORIES.items() if t in ts),
            "type": t,
            "count": counts.get(t, 0),
            "share": _share(counts.get(t, 0), len(decided)),
        }
        for t in TYPES
    ]


def first_error_rows(
    labels: list[dict[str, Any]], cases: list[Case], bins: int = 10, variant: str | None = None
) -> list[dict[str, Any]]:
    """Histogram of the first-error position as a fraction of trace length: ``bins`` equal bins of (0, 1]."""
    lengths = {c.id: len(c.qt_steps) for c in cases}
    counts = [0] * bins
    for lab in decided_errors(labels):
        n = lengths.get(lab["id"])
        if lab.get("error_step") is None or not n:
            continue
        frac = lab["error_step"] / n
        counts[min(bins - 1, max(0, int((frac - 1e-12) * bins)))] += 1
    pre = {"variant": variant} if variant is not None else {}
    return [
        {**pre, "bin_start": round(i / bins, 4), "bin_end": round((i + 1) / bins, 4), "count": counts[i]}
        for i in range(bins)
    ]


def first_error_step_rows(labels: list[dict[str, Any]], variant: str | None = None) -> list[dict[str, Any]]:
    """Histogram of the absolute first-error step (1, 2, …)."""
    counts = Counter(lab["error_step"] for lab in decided_errors(labels) if lab.get("error_step") is not None)
    pre = {"variant": variant} if variant is not None else {}
    return [{**pre, "step": s, "count": counts[s]} for s in sorted(counts)]


def confusion_rows(labels: list[dict[str, Any]], ground_truth: GroundTruth, variant: str) -> list[dict[str, Any]]:
    """One row per case with ground truth: the true first-error type vs the label's (plot data for a
    confusion matrix; ``undecided`` where the vote reached no label)."""
    rows = []
    for lab in labels:
        if lab["id"] not in ground_truth:
            continue
        _, true_type = ground_truth[lab["id"]]
        predicted = lab.get("primary_error_type") if lab["rule"] in DECIDED_RULES else "undecided"
        rows.append({"variant": variant, "id": lab["id"], "actual": true_type or NO_ERROR, "predicted": predicted or NO_ERROR})
    return rows


def potential_rows(judgments: list[dict[str, Any]], cases: list[Case], variant: str, limit: int = 6) -> list[dict[str, Any]]:
    """Potential curves of up to ``limit`` failures a rollout judge located (one row per prefix rolled
    out or graded: the kept steps ``k``, ``k / steps``, the success rate from there and the located
    step), the longest curves first (binary search rolls out only some prefixes), then by case id."""
    steps = {c.id: len(c.qt_steps) for c in cases}
    rows: list[dict[str, Any]] = []
    chosen = sorted(
        (j for j in judgments if j.get("potential") and speaks(j) and steps.get(str(j["id"]))),
        key=lambda j: (-len(j["potential"]), str(j["id"])),
    )[:limit]
    for j in chosen:
        n = steps[str(j["id"])]
        for k, ok, total in j["potential"]:
            rows.append({"variant": variant, "judge": j["judge"], "id": str(j["id"]), "kept_steps": k,
                         "kept_fraction": round(k / n, 4), "success_rate": _share(ok, total), "located_step": j["error_step"]})  # fmt: skip
    return rows
