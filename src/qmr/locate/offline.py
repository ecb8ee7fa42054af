"""Offline judges (no network, no cost) and the toy domain's exact ground truth.

``arithmetic`` re-computes every arithmetic claim ``expr = value`` of the quantized trace exactly
(`qmr.locate.arith`); the first false one is a ``computational_error`` at its step. It abstains when
every claim holds — it cannot see any other kind of error.

``reference`` walks the quantized trace along the **gold path** and reports the first step that leaves
it. The gold path is the toy ``plan`` (``[{"a", "op", "b", "result"}]``), or the calculator annotations
``<<a*b=c>>`` of a GSM8K solution, or the plain ``a op b = c`` claims of a LaTeX-free gold solution; with
none of these it abstains. For each claim of a step (the computing side's operands, its exact value, the
value the step writes) it raises flags, and the step's type is the earliest flag (precedence rule):

==========================================================  ===========================
what went wrong in the step                                 type
==========================================================  ===========================
an operand is neither in the question (digits, number        contextual_oversight
words, percentages, constants the gold uses) nor a number
of an earlier step, nor a value the gold computes
(misread / wrongly copied number)
the right quantities but a value off the gold path (wrong    logical_reasoning_error
operator, reversed ``-``/``/``, wrong pair of quantities)
an operand the gold computes but the trace never did         procedural_error
(skipped / merged step), a stated final answer that differs
from the last computed value, or an answer stated before
the gold path is complete (jumps to the answer)
the computation is set up on the path but the written        computational_error
result is wrong
==========================================================  ===========================

A stated final answer equal to the gold answer with nothing flagged before gives ``no_error``. When it
finds nothing and the trace states no final answer it abstains — except against a toy plan, whose
format requires ``The answer is N.``: there it is a ``procedural_error`` at the last step. Lines
without any claim (prose) are never errors by themselves.

`toy_ground_truth` is the generator's exact answer for the toy domain: a plain step-by-step comparison
with the plan (a DAG: independent steps may come in any order; an exact repeat of a finished step is
harmless) using the same table. Unparseable non-answer lines and traces that end without an answer
line are ``procedural_error`` (at that line / at the last step).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from qmr.locate.arith import (
    Claim,
    annotation_claims,
    claims_in,
    context_numbers,
    format_value,
    numbers_in,
    parse_number,
    stated_answer,
    subexpression_values,
)
from qmr.locate.cases import Case
from qmr.locate.judges import make_judgment
from qmr.locate.taxonomy import NO_ERROR, earliest

CO = "contextual_oversight"
LR = "logical_reasoning_error"
PE = "procedural_error"
CE = "computational_error"

ARITHMETIC_VERSION = "arithmetic-v1"
REFERENCE_VERSION = "reference-v1"


# --------------------------------------------------------------------------------------------------
# arithmetic judge


#: a sentence that says its own equation is false ("And 1 = 3 + 4 is clearly not true.") is no error
_DISOWNED = re.compile(
    r"\b(?:not\s+(?:true|correct|right|equal)|false|isn't|wrong|incorrect|contradiction|impossible)\b|\\neq|≠",
    re.I,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])|\n+")


def first_false_claim(steps: list[str]) -> Claim | None:
    """The first false arithmetic claim of a trace (sentences that disown their equation are skipped)."""
    for i, step in enumerate(steps, start=1):
        for sentence in _SENTENCE.split(step):
            if _DISOWNED.search(sentence):
                continue
            for claim in claims_in(sentence, step=i):
                if not claim.ok:
                    return claim
    return None


class ArithmeticJudge:
    kind = "arithmetic"
    model = "offline"
    prompt_version = ARITHMETIC_VERSION
    concurrency = 1
    cacheable = False

    def __init__(self, name: str = "arithmetic"):
        self.name = name

    def judge(self, case: Case) -> dict[str, Any]:
        claim = first_false_claim(case.qt_steps)
        n_claims = sum(len(claims_in(s)) for s in case.qt_steps)
        if claim is None:
            return make_judgment(
                case,
                self,
                raw=f"{n_claims} claim(s) checked, all true",
                explanation=f"every arithmetic claim holds ({n_claims} checked); no computational error to report",
            )
        expl = (
            f"step {claim.step}: '{claim.describe()}' is false: the left side equals "
            f"{format_value(claim.computed)}, not {format_value(claim.claimed)}"
        )
        return make_judgment(
            case,
            self,
            raw=claim.describe(),
            primary_error_type=CE,
            error_step=claim.step,
            explanation=expl,
            confidence_score=0.95,
            abstain=False,
        )


# --------------------------------------------------------------------------------------------------
# gold path


@dataclass
class GoldPath:
    source: str  # plan | annotations | claims
    results: list[Fraction]
    #: values on the path: results and the partial values of each gold computation
    values: set[Fraction]
    #: numbers a reader may use without computing them: question numbers + constants the gold uses
    given: set[Fraction]
    answer: Fraction | None
    exprs: list[str] = field(default_factory=list)


_OP_SYMBOL = {"+": "+", "-": "-", "*": "*", "/": "/", "x": "*", "×": "*", "÷": "/"}


def _plan_value(x: Any) -> Fraction:
    return Fraction(str(x))


def gold_path(case: Case) -> GoldPath | None:
    """The gold path of a case, or None when the benchmark gives no usable gold solution."""
    answer = parse_number(case.gold_answer)
    if case.plan:
        given = context_numbers(case.question)
        results = [_plan_value(s["result"]) for s in case.plan]
        exprs = [f"{s['a']} {s['op']} {s['b']}" for s in case.plan]
        values = set(results)
        if answer is not None:
            values.add(answer)
        return GoldPath("plan", results, values, given, answer, exprs)
    given = context_numbers(case.question) | {Fraction(1), Fraction(2), Fraction(100)}
    sol = case.gold_solution or ""
    claims = annotation_claims(sol)
    source = "annotations"
    if not claims:
        if "\\" in sol or "$" in sol:
            return None
        claims = [c for line in sol.splitlines() for c in claims_in(line)]
        source = "claims"
    claims = [c for c in claims if c.computed is not None]
    if not claims:
        return None
    results = [c.computed for c in claims if c.computed is not None]
    values: set[Fraction] = set(results)
    exprs: list[str] = []
    for c in claims:
        expr = c.lhs if c.kind == "annotation" else c.describe().split("=")[0]
        exprs.append(expr)
        values |= subexpression_values(expr)
        # constants the gold uses (7 days, 60 minutes …) count as given
        given |= {abs(x) for x in c.operands}
    given -= set(results) - context_numbers(case.question)
    if answer is not None:
        values.add(answer)
    return GoldPath(source, results, values, given, answer, exprs)


# --------------------------------------------------------------------------------------------------
# reference judge


def locate_against_gold(steps: list[str], gold: GoldPath) -> tuple[int | None, str | None, str]:
    """(error_step, type, explanation) of the first step leaving the gold path.

    (None, "no_error", …) when the trace reaches the gold answer on the path; (None, None, …) when
    nothing is found and no final answer is stated (the judge then abstains).
    """
    known: set[Fraction] = set(gold.given)
    computed_before: set[Fraction] = set()
    last_value: Fraction | None = None
    for i, step in enumerate(steps, start=1):
        is_answer, ans = stated_answer(step)
        for claim in claims_in(step, step=i):
            flags: dict[str, str] = {}
            for x in claim.operands:
                if x in known or -x in known:
                    continue
                if x in gold.values:
                    flags.setdefault(
                        PE, f"uses {format_value(x)}, a value the gold computes but this trace never did"
                    )
                else:
                    flags.setdefault(
                        CO, f"uses {format_value(x)}, which is neither given nor computed earlier"
                    )
            computed = claim.computed
            if computed is not None and computed not in gold.values and computed not in computed_before:
                flags.setdefault(
                    LR, f"'{claim.describe()}' computes {format_value(computed)}, which is off the gold path"
                )
            if not claim.ok:
                flags.setdefault(
                    CE,
                    f"'{claim.describe()}' is false: it equals {format_value(computed)}, not {format_value(claim.claimed)}",
                )
            if flags:
                primary = earliest(flags)
                assert primary is not None
                return i, primary, f"step {i}: {flags[primary]}"
            if claim.claimed is not None:
                known.add(claim.claimed)
                computed_before.add(claim.claimed)
                last_value = claim.claimed
        if is_answer:
            if ans is None:
                return None, None, f"step {i} states a non-numeric answer; cannot compare with the gold path"
            if last_value is not None and ans != last_value:
                return (
                    i,
                    PE,
                    (
                        f"step {i}: the stated answer {format_value(ans)} differs from the last computed value "
                        f"{format_value(last_value)}"
                    ),
                )
            if gold.answer is not None and ans == gold.answer:
                return None, NO_ERROR, f"step {i} states the gold answer {format_value(ans)} on the gold path"
            return (
                i,
                PE,
                (
                    f"step {i}: answers {format_value(ans)} before completing the gold path "
                    f"(gold answer {format_value(gold.answer)})"
                ),
            )
        known.update(numbers_in(step))
    if gold.source == "plan" and steps:
        return len(steps), PE, f"step {len(steps)}: the trace ends without stating a final answer"
    return None, None, "no step leaves the gold path and no final answer is stated"


class ReferenceJudge:
    kind = "reference"
    model = "offline"
    prompt_version = REFERENCE_VERSION
    concurrency = 1
    cacheable = False

    def __init__(self, name: str = "reference"):
        self.name = name

    def judge(self, case: Case) -> dict[str, Any]:
        gold = gold_path(case)
        if gold is None:
            return make_judgment(
                case,
                self,
                raw="no gold path",
                explanation="the benchmark gives no usable gold solution; abstaining",
            )
        step, etype, expl = locate_against_gold(case.qt_steps, gold)
        raw = f"gold path from {gold.source}: {len(gold.results)} step(s)"
        if etype is None:
            return make_judgment(case, self, raw=raw, explanation=expl)
        confidence = {"plan": 0.9, "annotations": 0.75, "claims": 0.6}[gold.source]
        return make_judgment(
            case,
            self,
            raw=raw,
            primary_error_type=etype,
            error_step=step,
            explanation=expl,
            confidence_score=confidence,
            abstain=False,
        )


# --------------------------------------------------------------------------------------------------
# toy ground truth

_TOY_STEP = re.compile(
    r"^\s*(-?\d+(?:\.\d+)?)\s*([-+*/x×÷])\s*(-?\d+(?:\.\d+)?)\s*=\s*(-?\d+(?:\.\d+)?)\s*\.?\s*$"
)
_TOY_ANSWER = re.compile(r"answer\s+is\s*:?\s*(-?\d+(?:\.\d+)?)", re.I)
_COMMUTATIVE = {"+", "*"}


def _same_operands(op: str, a: Fraction, b: Fraction, g: tuple) -> bool:
    ga, gop, gb, _ = g
    if op in _COMMUTATIVE and gop in _COMMUTATIVE:
        return sorted((a, b)) == sorted((ga, gb))
    return (a, b) == (ga, gb)


def toy_ground_truth(
    plan: list[dict], qt_steps: list[str], question: str | None = None
) -> tuple[int | None, str | None]:
    """(first faulty step, type) of a toy trace against the generator's plan.

    Returns ``(None, "no_error")`` for a trace that follows the plan and answers it, ``(None, None)``
    for an empty trace. Numbers "given" by the question are the question's digits when ``question`` is
    passed, otherwise the plan operands that no earlier plan step produces.
    """
    gold = [(Fraction(str(s["a"])), s["op"], Fraction(str(s["b"])), Fraction(str(s["result"]))) for s in plan]
    if question is not None:
        available = {Fraction(x) for x in re.findall(r"\d+", question)}
    else:
        available = set()
        produced: set[Fraction] = set()
        for a, _, b, r in gold:
            available |= {x for x in (a, b) if x not in produced}
            produced.add(r)
    done = [False] * len(gold)
    last: Fraction | None = None
    for i, text in enumerate(qt_steps, start=1):
        m_ans = _TOY_ANSWER.search(text)
        if m_ans:
            ans = Fraction(m_ans.group(1))
            if last is not None and ans != last:
                return i, PE  # the answer line disagrees with the last computed value
            if not all(done):
                return i, PE  # jumps to the answer before finishing the plan
            if gold and ans != gold[-1][3]:
                return i, PE
            return None, NO_ERROR
        m = _TOY_STEP.match(text)
        if m is None:
            return i, PE  # not a step of the procedure
        a, op, b, c = Fraction(m.group(1)), _OP_SYMBOL[m.group(2)], Fraction(m.group(3)), Fraction(m.group(4))
        # on the plan: an unfinished gold step with these operands, operator and result
        match = next(
            (
                j
                for j, g in enumerate(gold)
                if not done[j] and g[1] == op and _same_operands(op, a, b, g) and g[3] == c
            ),
            None,
        )
        if match is not None and a in available and b in available:
            done[match] = True
            available.add(c)
            last = c
            continue
        if any(
            done[j] and g[1] == op and _same_operands(op, a, b, g) and g[3] == c for j, g in enumerate(gold)
        ):
            last = c
            continue  # an exact repeat of a finished step: harmless
        future = {g[3] for j, g in enumerate(gold) if not done[j]}
        for x in (a, b):
            if x not in available:
                return i, (PE if x in future else CO)
        if any(not done[j] and g[1] == op and _same_operands(op, a, b, g) for j, g in enumerate(gold)):
            return i, CE  # right operands and operator, wrong result
        return i, LR  # wrong operator, reversed operands, or a wrong pair of quantities
    if not qt_steps:
        return None, None
    return len(qt_steps), PE  # ends without an answer line


def ground_truth_for(cases: list[Case]) -> dict[str, tuple[int | None, str | None]]:
    """{case id: (step, type)} for every case with a toy plan (exact ground truth)."""
    return {c.id: toy_ground_truth(c.plan, c.qt_steps, c.question) for c in cases if c.plan}


def arithmetic_judge(name: str, spec: Any = None) -> ArithmeticJudge:
    """Factory for judge kind ``arithmetic`` (locate.judges.JUDGE_KINDS); the spec has no options."""
    return ArithmeticJudge(name)


def reference_judge(name: str, spec: Any = None) -> ReferenceJudge:
    """Factory for judge kind ``reference`` (locate.judges.JUDGE_KINDS); the spec has no options."""
    return ReferenceJudge(name)
