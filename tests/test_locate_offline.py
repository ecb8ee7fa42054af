"""Step segmentation, exact arithmetic claims, the offline judges and the toy ground truth."""

from __future__ import annotations

from fractions import Fraction

import pytest

from locate_helpers import gold_steps, toy_case, toy_plan
from qmr.locate.arith import claims_in, evaluate, parse_number, stated_answer
from qmr.locate.cases import Case, failure_cases, input_hash
from qmr.locate.offline import ArithmeticJudge, ReferenceJudge, gold_path, toy_ground_truth
from qmr.locate.taxonomy import CATEGORIES, NO_ERROR, TYPES, category_of, earliest, normalize_type
from qmr.steps import number_steps, split_steps

# --------------------------------------------------------------------------------------------------
# steps


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "4 * 12 = 48\n23 + 48 = 71\n71 - 17 = 54\nThe answer is 54.",
            ["4 * 12 = 48", "23 + 48 = 71", "71 - 17 = 54", "The answer is 54."],
        ),
        (
            "4 * 12 = 48\n\n23 + 48 = 71\n\nThe answer is 71.\n",
            ["4 * 12 = 48", "23 + 48 = 71", "The answer is 71."],
        ),
        ("Step 1: add 2\nand 3\nStep 2: get 5\n# Answer\n\n5", ["add 2\nand 3", "get 5\n# Answer\n\n5"]),
        ("Let me think.\nStep 1: x = 2\nstep 2. y = 3", ["Let me think.", "x = 2", "y = 3"]),
        ("**Step 1:** a\n## Step 2: b", ["a", "b"]),
        (
            "First we note that the\nsum is 5.\n\nThen the product\nis 6.",
            ["First we note that the\nsum is 5.", "Then the product\nis 6."],
        ),
        ("a\r\nb\r\n", ["a", "b"]),
        ("", []),
        ("   \n\n ", []),
    ],
)
def test_split_steps(text, expected):
    assert split_steps(text) == expected


def test_number_steps():
    assert number_steps(["a", "b"]) == "Step 1: a\nStep 2: b"


# --------------------------------------------------------------------------------------------------
# taxonomy


def test_taxonomy():
    assert len(TYPES) == 7 and list(CATEGORIES) == ["CE", "RE", "ME", "EE"]
    assert category_of("procedural_error") == "ME" and category_of(NO_ERROR) is None
    assert earliest(["computational_error", "contextual_oversight", None]) == "contextual_oversight"
    assert earliest([NO_ERROR, "formula_rule_error"]) == "formula_rule_error"
    assert earliest([NO_ERROR]) == NO_ERROR and earliest([]) is None
    assert normalize_type("Computational Error") == "computational_error"
    assert normalize_type("Execution Error > Symbolic Manipulation Error") == "symbolic_manipulation_error"
    assert normalize_type("EE/computational_error") == "computational_error"
    assert normalize_type("no error") == NO_ERROR
    assert normalize_type("vibes") is None and normalize_type(3) is None
    with pytest.raises(ValueError, match="allowed"):
        category_of("vibes")


# --------------------------------------------------------------------------------------------------
# arithmetic claims


def _claims(text):
    return [(c.ok, c.computed, c.claimed) for c in claims_in(text)]


@pytest.mark.parametrize(
    "text, oks",
    [
        ("4 * 12 = 48", [True]),
        ("23 + 48 = 70", [False]),
        ("3/4 * 8 = 6", [True]),
        (r"$\frac{3}{4} \times 8 = 6$", [True]),
        (r"\dfrac{1}{2} + \frac{1}{3} = \frac{5}{6}", [True]),
        (r"\frac12 \cdot 10 = 5", [True]),
        ("12 ÷ 4 = 3", [True]),
        (r"12 \div 4 = 4", [False]),
        ("3 × 4 = 12", [True]),
        ("3 x 4 = 13", [False]),
        ("80,000 + 50,000 = 130,000", [True]),
        ("1,234 * 2 = 2,468.", [True]),
        ("0.5 * 3 = 1.5", [True]),
        ("1/3 = 0.33", [True]),  # a rounded decimal is fine
        ("2/3 = 0.67", [True]),
        ("100/3 = 33", [False]),  # an integer claim is exact
        ("(2 + 3) * 4 = 20", [True]),
        ("2(3+4) = 14", [True]),
        ("2^{10} = 1024", [True]),
        ("5 - 8 = -3", [True]),
        ("-3 + 5 = 2", [True]),
        ("a + b = 3 + 4 = 7 = 8", [True, False]),  # a chain: every link is a claim
        ("16 - 3 - 4 = 9 = 9", [True, True]),
        ("He sprints 3*3=9 times, so 9*60=540 meters", [True, True]),
        ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs", [True, True]),
        ("She makes 9 * 2 = $<<9*2=19>>19 a day", [False, False]),
        (r"\sqrt{16} = 4", []),  # glued to a command: not a claim
        ("3 eggs - 4 = 9", []),  # a side cut by a word: not a claim
        ("50 * 20% = 10", []),
        ("x = 12%", []),
        ("2x + 3 = 11", []),
        ("the ratio is about 3 ≈ 3.1", []),
    ],
)
def test_claims(text, oks):
    assert [ok for ok, _, _ in _claims(text)] == oks


def test_claim_values_and_helpers():
    (claim,) = claims_in("23 + 48 = 70", step=2)
    assert claim.step == 2 and claim.computed == 71 and claim.claimed == 70 and claim.operands == [23, 48]
    assert evaluate(r"\frac{1}{4} + 0.25") == Fraction(1, 2)
    assert evaluate("1/0") is None
    assert (
        parse_number("$1,234") == 1234
        and parse_number(r"\frac{11}{2}") == Fraction(11, 2)
        and parse_number("x+1") is None
    )
    assert stated_answer("The answer is 54.") == (True, 54)
    assert stated_answer("so #### 70,000") == (True, 70000)
    assert stated_answer(r"hence \boxed{\frac{1}{2}}") == (True, Fraction(1, 2))
    assert stated_answer("4 * 12 = 48") == (False, None)


def test_arithmetic_judge():
    j = ArithmeticJudge().judge(
        toy_case(["4 * 12 = 48", "23 + 48 = 72", "72 - 17 = 55", "The answer is 55."])
    )
    assert (j["primary_error_type"], j["error_step"], j["valid"], j["abstain"]) == (
        "computational_error",
        2,
        True,
        False,
    )
    assert "71" in j["explanation"] and j["calls"] == 0 and j["cost"] == 0.0
    j = ArithmeticJudge().judge(
        toy_case(["4 * 13 = 52", "23 + 52 = 75", "75 - 17 = 58", "The answer is 58."])
    )
    assert (j["primary_error_type"], j["error_step"], j["valid"], j["abstain"]) == (None, None, True, True)
    # a sentence that disowns its own equation is not an error; the next sentence still counts
    j = ArithmeticJudge().judge(toy_case(["If x = 1 then 1 = 3 + 4, which is not true.", "So 2 * 3 = 7."]))
    assert (j["primary_error_type"], j["error_step"]) == ("computational_error", 2)


# --------------------------------------------------------------------------------------------------
# reference judge and toy ground truth (question: 23 apples, 4 bags of 12, gives 17 -> 54)

CO, LR, PE, CE = "contextual_oversight", "logical_reasoning_error", "procedural_error", "computational_error"

TOY_TRACES = [
    # (name, qt steps, expected (step, type))
    ("correct", None, (None, NO_ERROR)),
    ("wrong result", ["4 * 12 = 48", "23 + 48 = 72", "72 - 17 = 55", "The answer is 55."], (2, CE)),
    ("wrong operator", ["4 + 12 = 16", "23 + 16 = 39", "39 - 17 = 22", "The answer is 22."], (1, LR)),
    (
        "wrong operator, wrong result too",
        ["4 + 12 = 15", "23 + 15 = 38", "38 - 17 = 21", "The answer is 21."],
        (1, LR),
    ),
    ("reversed subtraction", ["4 * 12 = 48", "23 + 48 = 71", "17 - 71 = -54", "The answer is -54."], (3, LR)),
    ("misread number", ["4 * 13 = 52", "23 + 52 = 75", "75 - 17 = 58", "The answer is 58."], (1, CO)),
    (
        "misread and miscomputed",
        ["4 * 13 = 48", "23 + 48 = 71", "71 - 17 = 54", "The answer is 54."],
        (1, CO),
    ),
    ("uses a later value", ["4 * 12 = 48", "71 - 17 = 54", "The answer is 54."], (2, PE)),
    ("jumps to the answer", ["4 * 12 = 48", "23 + 48 = 71", "The answer is 71."], (3, PE)),
    ("no answer line", ["4 * 12 = 48", "23 + 48 = 71"], (2, PE)),
    ("answer disagrees", ["4 * 12 = 48", "23 + 48 = 71", "71 - 17 = 54", "The answer is 45."], (4, PE)),
]


@pytest.mark.parametrize("name, steps, expected", TOY_TRACES, ids=[t[0] for t in TOY_TRACES])
def test_toy_ground_truth_and_reference(name, steps, expected):
    case = toy_case(steps)
    assert toy_ground_truth(case.plan, case.qt_steps, case.question) == expected
    assert toy_ground_truth(case.plan, case.qt_steps) == expected  # "given" numbers derived from the plan
    j = ReferenceJudge().judge(case)
    assert (j["error_step"], j["primary_error_type"]) == expected
    assert j["valid"] and not j["abstain"]


def test_toy_ground_truth_edges():
    plan = toy_plan(23, 4, 12, 17)
    assert toy_ground_truth(plan, ["4 * 12 = 48", "4 * 12 = 48", *gold_steps(plan)[1:]]) == (
        None,
        NO_ERROR,
    )  # repeat
    assert toy_ground_truth(plan, ["4 * 12 = 48", "banana", "The answer is 54."]) == (2, PE)
    assert toy_ground_truth(plan, ["4 * 12 = 48", "23 + 48 = 71"]) == (2, PE)  # no answer line
    assert toy_ground_truth(plan, []) == (None, None)
    assert toy_ground_truth(plan, ["12 * 4 = 48", "48 + 23 = 71", "71 - 17 = 54", "The answer is 54."]) == (
        None,
        NO_ERROR,
    )
    # independent steps may come in any order (a DAG): 3*5=15, 4*6=24, 15+24=39
    dag = [
        {"a": 3, "op": "*", "b": 5, "result": 15},
        {"a": 4, "op": "*", "b": 6, "result": 24},
        {"a": 15, "op": "+", "b": 24, "result": 39},
    ]
    assert toy_ground_truth(dag, ["4 * 6 = 24", "3 * 5 = 15", "15 + 24 = 40", "The answer is 40."]) == (3, CE)


def test_reference_gsm8k_annotations():
    q = (
        "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
        "friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck "
        "egg. How much in dollars does she make every day at the farmers' market?"
    )
    sol = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18"

    def judge(steps):
        c = Case(
            id="g",
            variant="w4",
            benchmark="gsm8k",
            question=q,
            gold_answer="18",
            gold_solution=sol,
            qt_steps=steps,
        )
        j = ReferenceJudge().judge(c)
        return j["error_step"], j["primary_error_type"]

    assert gold_path(Case("g", "w4", "gsm8k", q, "18", gold_solution=sol)).source == "annotations"
    # the trace splits 16-3-4 into two steps: still on the gold path
    assert judge(
        [
            "She has 16 - 3 = 13 eggs.",
            "Then 13 - 4 = 9 remain.",
            "She makes 9 * 2 = 20 dollars.",
            "The answer is 20.",
        ]
    ) == (3, CE)
    assert judge(["She has 16 - 3 = 13 eggs.", "She makes 13 * 2 = 26 dollars.", "The answer is 26."]) == (
        2,
        LR,
    )
    assert judge(["She has 16 - 5 = 11 eggs.", "The answer is 22."]) == (1, CO)
    assert judge(["She makes 9 * 2 = 18 dollars.", "The answer is 18."]) == (1, PE)  # 9 never computed
    assert judge(["Janet sells 16 - 3 - 4 = 9 eggs.", "She makes 9 * 2 = $18.", "The answer is 18."]) == (
        None,
        NO_ERROR,
    )
    assert judge(["She sells some eggs."]) == (None, None)  # nothing located, no answer: abstains


def test_reference_abstains_without_gold():
    c = Case(
        id="m",
        variant="w4",
        benchmark="math500",
        question="Find x.",
        gold_answer="3",
        gold_solution=r"We get $x=\boxed{3}$.",
        qt_steps=["x = 4"],
    )
    # a LaTeX gold solution gives a "latex" gold path (numbers and claims of the solution): the trace's
    # 4 is off it (one operation on known numbers gives it: a wrong operation) and no answer is stated
    # -> located; the gold answer stated -> no error
    j = ReferenceJudge().judge(c)
    assert j["valid"] and not j["abstain"] and (j["error_step"], j["primary_error_type"]) == (1, LR)
    c.qt_steps = ["We get $x = 3$.", r"The answer is $\boxed{3}$."]
    assert ReferenceJudge().judge(c)["primary_error_type"] == NO_ERROR
    c.gold_solution = None
    j = ReferenceJudge().judge(c)
    assert j["abstain"] and j["valid"] and j["primary_error_type"] is None


# --------------------------------------------------------------------------------------------------
# failure cases


def test_failure_cases_majority():
    bench = [
        {
            "id": "p1",
            "source": "toy",
            "question": "Q1",
            "answer": "5",
            "solution": "2 + 3 = 5\nThe answer is 5.",
            "plan": [{"a": 2, "op": "+", "b": 3, "result": 5}],
        },
        {"id": "p2", "source": "toy", "question": "Q2", "answer": "7"},
        {"id": "p3", "source": "toy", "question": "Q3", "answer": "9"},
    ]

    def tr(pid, sample, pred, correct, text=None):
        return {
            "id": pid,
            "variant": "x",
            "benchmark": "toy",
            "sample": sample,
            "prompt": "",
            "text": text or f"The answer is {pred}.",
            "steps": [],
            "pred": pred,
            "correct": correct,
            "tokens": 1,
            "seconds": 0.1,
        }

    fp = [tr("p1", 0, "5", True), tr("p2", 0, "7", True), tr("p3", 0, "1", False)]
    qt = [
        tr("p1", 0, "6", False, "2 + 3 = 6\nThe answer is 6."), tr("p1", 1, "5", True), tr("p1", 2, "6", False, "other"),
        tr("p2", 0, "7", True), tr("p2", 1, "8", False),  # tie -> earliest sample (correct)
        tr("p3", 0, "2", False),
    ]  # fmt: skip
    cases = failure_cases(bench, fp, qt, "w4", kind="integer")
    assert [c.id for c in cases] == ["p1"]
    c = cases[0]
    assert (
        c.qt_sample == 0
        and c.qt_pred == "6"
        and c.qt_steps == ["2 + 3 = 6", "The answer is 6."]
        and c.plan
        and c.fp_pred == "5"
    )
    h = input_hash(c)
    c2 = Case(**{**c.__dict__, "id": "other", "variant": "w3"})
    assert input_hash(c2) == h  # id and variant are not judge-visible
    c2.qt_steps = ["2 + 3 = 7"]
    assert input_hash(c2) != h
