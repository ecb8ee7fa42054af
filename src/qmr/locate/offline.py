"""Offline judges (no network, no cost) and the toy domain's exact ground truth.

``arithmetic`` re-computes every arithmetic claim ``expr = value`` of the quantized trace exactly
(`qmr.locate.arith`); the first false one is a ``computational_error`` at its step. It abstains when
every claim holds — it cannot see any other kind of error.

``reference`` walks the quantized trace along the **gold path** and reports the first step that leaves
it. The gold path is the toy ``plan`` (``[{"a", "op", "b", "result"}]``), or the calculator annotations
``<<a*b=c>>`` of a GSM8K solution, or the plain ``a op b = c`` claims of a LaTeX-free gold solution,
or (weakest, ``latex``) the numbers, claims and answer of a LaTeX solution; without a gold solution it
abstains. Against a plan the table below is applied to the ``a op b = c`` claims
(`locate_against_gold`); against a GSM8K-style or LaTeX gold, `locate_in_prose` also reads
computations written in words and the bare quantities a step states, and lets the stated final answer
decide whether another route is fine (its docstring). For each claim of a step (the computing side's
operands, its exact value, the value the step writes) it raises flags, and the step's type is the earliest flag (precedence rule):

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
    normalize_math,
    numbers_in,
    one_step_reaches,
    parse_number,
    prose_claims,
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
REFERENCE_VERSION = "reference-v2"


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
    #: every number the gold solution writes, and the values of its prose claims (`locate_in_prose`)
    stated: set[Fraction] = field(default_factory=set)
    #: partial values of the gold computations (``16-3`` of ``16-3-4``) -> (numbers, operators) of each
    #: computation they are part of: a trace's ``a op b`` reaches one only with the same numbers and operator
    partials: dict[Fraction, list[tuple[frozenset, frozenset]]] = field(default_factory=dict)


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
        latex = "\\" in sol or "$" in sol
        claims = [c for line in sol.splitlines() for c in claims_in(line)]
        source = "latex" if latex else "claims"
    claims = [c for c in claims if c.computed is not None]
    if not claims and source != "latex":
        return None
    results = [c.computed for c in claims if c.computed is not None]
    values: set[Fraction] = set(results)
    exprs: list[str] = []
    partials: dict[Fraction, list[tuple[frozenset, frozenset]]] = {}
    for c in claims:
        expr = c.lhs if c.kind == "annotation" else c.describe().split("=")[0]
        exprs.append(expr)
        values |= subexpression_values(expr)
        nums = frozenset(abs(x) for x in numbers_in(expr))
        ops = frozenset(re.findall(r"(?<=[\d)\s])[-+*/](?=[\s\d(.])", normalize_math(expr)))
        for v in subexpression_values(expr):
            partials.setdefault(v, []).append((nums, ops))
        # constants the gold uses (7 days, 60 minutes …) count as given
        given |= {abs(x) for x in c.operands}
    given -= set(results) - context_numbers(case.question)
    if answer is not None:
        values.add(answer)
    stated = set(numbers_in(sol))
    for line in sol.splitlines():
        for c in prose_claims(line):
            stated |= {v for v in (c.computed, c.claimed) if v is not None}
    return GoldPath(source, results, values, given, answer, exprs, stated, partials)


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


#: numbers a prose solution may use without the problem giving them (units, halves, percentages)
UNIT_CONSTANTS = frozenset(Fraction(x) for x in (1, 2, 3, 4, 7, 10, 12, 24, 52, 60, 100, 365, 1000))


def _final_answer(steps: list[str]) -> tuple[int | None, Fraction | None]:
    """(1-indexed step, value) of the first step stating a final answer; (None, None) when none does."""
    for i, step in enumerate(steps, start=1):
        is_answer, ans = stated_answer(step)
        if is_answer:
            return i, ans
    return None, None


def _reaches(claim: Claim, gold: GoldPath) -> bool:
    """Whether a claim's computed value is on the gold path: a result, the answer or a number the gold
    writes, or a partial value of a gold computation with the claim's numbers and operators."""
    v = claim.computed
    if v is None:
        return False
    if v in gold.results or v in gold.stated or v == gold.answer:
        return True
    side = claim.lhs if re.search(r"\d\s*[-+*/]", normalize_math(claim.lhs)) else claim.rhs
    nums = {abs(x) for x in claim.operands}
    ops = set(re.findall(r"(?<=[\d)\s])[-+*/](?=[\s\d(.])", normalize_math(side)))
    return any(nums <= gnums and ops <= gops for gnums, gops in gold.partials.get(v, []))


def locate_in_prose(steps: list[str], gold: GoldPath) -> tuple[int | None, str | None, str]:
    """`locate_against_gold` for prose solutions against a GSM8K-style gold path (annotations or
    ``a op b = c`` lines): the quantities a step states are tracked, not only its ``a op b = c`` claims.

    Per step, in order: every claim (symbols, calculator annotations, and prose read by
    `prose_to_math`: ``5 times 12 is 60``, ``20% of 50 is 10``, ``half of 60``, nouns between the
    numbers) and then every other number the step states that is neither known (the problem's numbers,
    constants the gold uses, numbers of earlier steps; `UNIT_CONSTANTS` too, as operands, when the
    answer is right) nor one of its claims' values.
    Known numbers are kept; a claim that is false is a ``computational_error`` whatever the answer.
    Whether a step *leaves* the gold path depends on the stated final answer:

    - answer equal to the gold answer: another route is fine; only an operand that nothing known
      yields in one operation (a value pulled from nowhere) is flagged (``procedural_error`` when the
      gold computes it, else ``contextual_oversight``);
    - a wrong (or no) final answer: an unknown operand is flagged as in `locate_against_gold`, a claim
      whose value is off the gold path is a ``logical_reasoning_error``, and a stated number off the
      gold path is a ``logical_reasoning_error`` when one operation on known numbers gives it (a wrong
      operation or pair) and a ``computational_error`` otherwise (a wrong result).

    When nothing is flagged before a wrong final answer, the answer step is the error
    (``procedural_error``); with no final answer stated it abstains.
    """
    ans_step, ans = _final_answer(steps)
    answer_ok = ans_step is not None and ans is not None and gold.answer is not None and ans == gold.answer
    if ans_step is not None and ans is None:
        return None, None, f"step {ans_step} states a non-numeric answer; cannot compare with the gold path"
    known: set[Fraction] = set(gold.given)
    on_path = gold.values | set(gold.results) | gold.stated
    for i, step in enumerate(steps, start=1):
        if i == ans_step:
            break
        flags: dict[str, str] = {}
        pool = known | UNIT_CONSTANTS
        claimed_here: set[Fraction] = set()
        claims = [
            c for sent in _SENTENCE.split(step) if not _DISOWNED.search(sent) for c in prose_claims(sent, step=i)
        ]
        for claim in claims:
            if not claim.ok:
                flags.setdefault(
                    CE,
                    f"'{claim.describe()}' is false: it equals {format_value(claim.computed)}, not {format_value(claim.claimed)}",
                )
            for x in claim.operands:
                if x in known or -x in known or x in claimed_here or (answer_ok and x in UNIT_CONSTANTS):
                    continue
                if answer_ok and x not in on_path and one_step_reaches(x, pool):
                    continue  # another route: an implicit step
                kind = PE if x in on_path else CO
                what = "a value the gold computes but this trace never did" if kind == PE else "which is neither given nor computed earlier"
                flags.setdefault(kind, f"uses {format_value(x)}, {what}")
            computed = claim.computed
            if not answer_ok and computed is not None and computed not in known and not _reaches(claim, gold):
                flags.setdefault(
                    LR, f"'{claim.describe()}' computes {format_value(computed)}, which is off the gold path"
                )
            for v in (claim.computed, claim.claimed):
                if v is not None:
                    claimed_here.add(v)
            claimed_here.update(numbers_in(claim.lhs), numbers_in(claim.rhs))  # chains: 2/3*150 = 300/3
        if not answer_ok:
            for x in numbers_in(step):
                if x in known or x in claimed_here or x in on_path or x in (0, 1, 2):
                    continue
                if one_step_reaches(x, known):
                    flags.setdefault(LR, f"states {format_value(x)}, which is off the gold path")
                else:
                    flags.setdefault(
                        CE, f"states {format_value(x)}, which neither follows from earlier values nor lies on the gold path"
                    )
        if flags:
            primary = earliest(flags)
            assert primary is not None
            return i, primary, f"step {i}: {flags[primary]}"
        known |= claimed_here | set(numbers_in(step))
    if ans_step is None:
        return None, None, "no step leaves the gold path and no final answer is stated"
    if answer_ok:
        return None, NO_ERROR, f"step {ans_step} states the gold answer {format_value(ans)}; no step leaves the gold path"
    return (
        ans_step,
        PE,
        f"step {ans_step}: answers {format_value(ans)}, not the gold answer {format_value(gold.answer)}, "
        "with no earlier step off the gold path",
    )


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
        locate = locate_against_gold if gold.source == "plan" else locate_in_prose
        step, etype, expl = locate(case.qt_steps, gold)
        raw = f"gold path from {gold.source}: {len(gold.results)} step(s)"
        if etype is None:
            return make_judgment(case, self, raw=raw, explanation=expl)
        confidence = {"plan": 0.9, "annotations": 0.75, "claims": 0.6, "latex": 0.4}[gold.source]
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
