"""An offline evaluation of the vote on corrupted toy traces (no model, a few seconds).

Toy problems from `qmr.toy.problems`; each gold trace gets one first error of a known kind at a random
plan step — a computational slip (right operands, wrong result), a misread operand (contextual
oversight), a wrong operator (logical reasoning), or an answer stated before the plan is done
(procedural) — and, like a low-bit model's trace, later steps carry the wrong values forward with an
occasional further arithmetic slip. Ground truth is the toy's own definition
(`qmr.locate.offline.toy_ground_truth`), the judgments are the real ``reference`` and ``arithmetic``
judges, the labels the real vote, the scores `qmr.locate.metrics.vote_metrics`.

"Before" runs the same judgments through the vote with every judge treated as seeing all error types
(the protocol before specialists: ``kind`` set to ``llm``); "after" with their registered sight.

    PYTHONPATH=src python tests/toy_vote_eval.py [n_problems] [later_slip_rate]
"""

from __future__ import annotations

import random
import sys
from typing import Any

from qmr.locate.cases import Case
from qmr.locate.metrics import vote_metrics
from qmr.locate.offline import ArithmeticJudge, ReferenceJudge, ground_truth_for
from qmr.locate.vote import VoteSpec, vote_all
from qmr.toy.problems import generate_split

#: the toy default's ensemble (params.yaml `vote`)
TOY_DEFAULT = VoteSpec(baseline="reference", auxiliaries=["arithmetic"], min_votes=1, audit_fraction=0.0)
KINDS = ("computational", "misread", "operator", "early_answer")
_APPLY = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a // b if b and a % b == 0 else None,
}
_OTHER_OP = {"+": "-", "-": "+", "*": "+", "/": "*"}


def _slip(value: int, rng: random.Random) -> int:
    return value + rng.choice((1, -1, 2, -2, 10, -10)) if value > 10 else value + rng.choice((1, 2))


def corrupt(rec: dict[str, Any], rng: random.Random, later_slip: float = 0.3) -> tuple[list[str], str]:
    """(quantized steps, injected kind) for a toy record."""
    plan = rec["plan"]
    k = rng.randrange(len(plan))
    kind = rng.choice(KINDS)
    if kind == "early_answer" and k == 0:
        kind = "computational"
    sub: dict[int, int] = {}  # gold value -> the value this trace carries instead
    steps: list[str] = []
    last = None
    for j, s in enumerate(plan):
        a, op, b = sub.get(s["a"], s["a"]), s["op"], sub.get(s["b"], s["b"])
        if j == k and kind == "early_answer":
            steps.append(f"The answer is {last}.")
            return steps, kind
        if j == k and kind == "misread":
            b = b + rng.choice((1, 2, 3))
        if j == k and kind == "operator":
            op = _OTHER_OP[op]
        r = _APPLY[op](a, b)
        if r is None:  # a wrong operand or operator that does not divide: the model writes the quotient anyway
            r = a // b if b else a
        if (j == k and kind == "computational") or (j > k and rng.random() < later_slip):
            r = _slip(r, rng)
        steps.append(f"{a} {op} {b} = {r}")
        sub[s["result"]] = r
        last = r
    steps.append(f"The answer is {last}.")
    return steps, kind


def corrupted_cases(n: int = 300, seed: int = 0, later_slip: float = 0.3) -> list[Case]:
    """Failure cases (the stated answer is wrong) built from ``n`` toy test problems."""
    rng = random.Random(seed)
    cases = []
    for rec in generate_split("test", n, seed=seed):
        steps, _ = corrupt(rec, rng, later_slip)
        pred = steps[-1].removeprefix("The answer is ").rstrip(".")
        if pred == rec["answer"]:
            continue  # not a failure
        cases.append(
            Case(
                id=rec["id"], variant="corrupt", benchmark="toy", question=rec["question"],
                gold_answer=rec["answer"], gold_solution=rec["solution"], plan=rec["plan"],
                fp_text=rec["solution"], fp_steps=rec["steps"], fp_pred=rec["answer"],
                qt_text="\n".join(steps), qt_steps=steps, qt_pred=pred,
            )  # fmt: skip
        )
    return cases


def evaluate(cases: list[Case], spec: VoteSpec = TOY_DEFAULT) -> dict[str, dict[str, Any]]:
    """{"before": ..., "after": ...}: escalations and step accuracy (ensemble and per judge)."""
    judges = [ReferenceJudge("reference"), ArithmeticJudge("arithmetic")]
    judgments = [j.judge(c) for c in cases for j in judges]
    truth = ground_truth_for(cases)
    ids = [c.id for c in cases]
    out = {}
    for when, js in (("before", [{**j, "kind": "llm"} for j in judgments]), ("after", judgments)):
        labels = vote_all(js, spec, ids, "corrupt")
        m = vote_metrics(labels, js, cases, truth)
        out[when] = {
            "cases": len(cases),
            "escalated": m["escalated"],
            "rules": m["rules"],
            "step_accuracy": {name: a["step_accuracy"] for name, a in m["accuracy"].items()},
            "exact_accuracy": {name: a["exact_accuracy"] for name, a in m["accuracy"].items()},
        }
    return out


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 300
    slip = float(argv[1]) if len(argv) > 1 else 0.3
    res = evaluate(corrupted_cases(n, later_slip=slip))
    for when, r in res.items():
        acc = " ".join(f"{k}={v:.3f}" for k, v in r["step_accuracy"].items())
        sys.stdout.write(f"{when}: {r['cases']} cases, {r['escalated']} escalated; step accuracy {acc}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
