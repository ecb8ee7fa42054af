"""Tests for qmr.grading: extraction rules, math-verify equivalence, majority vote, gold answers.

Dataset tests read the shared benchmark copies (../shared/data relative to the repo) and skip cleanly
when a file is absent.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from qmr.benchmarks import normalize
from qmr.grading import (
    Extraction,
    extract_answer,
    extraction_counts,
    grade,
    is_equivalent,
    last_boxed,
    majority_vote,
    to_choice,
    to_int,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _jsonl(rel: str) -> list[dict]:
    path = DATA / rel
    if not path.is_file():
        pytest.skip(f"shared data file not available: {path}")
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# ------------------------------------------------------------------------------------------------
# extraction: math
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "method"),
    [
        ("The answer is 54.", "54", "answer_is"),
        ("3 + 4 = 7\nThe answer is 7.\nThe answer is 54.", "54", "answer_is"),
        ("The answer is $18.00$.", "18.00", "answer_is"),
        ("The answer is \\$18.", "18", "answer_is"),
        ("The answer is -7.", "-7", "answer_is"),
        ("The answer is 3.5.", "3.5", "answer_is"),
        ("The answer is $\\boxed{5}$.", "5", "answer_is"),
        ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}", "answer_is"),
        ("The answer is:\n\n$$42$$", "42", "answer_is"),
        ("so $x = \\boxed{\\frac{a^{2}}{b_{1}}}$ done", "\\frac{a^{2}}{b_{1}}", "boxed"),
        ("first \\boxed{1} then \\boxed{\\left\\{1, 2\\right\\}}", "\\left\\{1, 2\\right\\}", "boxed"),
        ("\\fbox{7}", "7", "boxed"),
        ("so it is \\boxed 5.", "5", "boxed"),
        ("She sells 9 eggs.\n#### 1,234", "1234", "hash"),
        ("#### -3", "-3", "hash"),
        ("She pays $18.00 in total.", "18.00", "last_number"),
        ("The total is 10,080 dollars.", "10080", "last_number"),
        ("It went from 3 to -12", "-12", "last_number"),
        ("5-3=2", "2", "last_number"),
        ("It is 3/4 of the cake", "3/4", "last_number"),
        # "our answer is correct" is not an answer statement
        ("So $\\boxed{44}$.\nWe may check: so our answer is correct.", "44", "boxed"),
    ],
)
def test_extract_math(text: str, value: str, method: str) -> None:
    assert extract_answer(text) == Extraction(value, method)


@pytest.mark.parametrize("text", ["", "   ", "I do not know.", "\\boxed{unclosed", "no digits here"])
def test_invalid_is_counted_not_raised(text: str) -> None:
    ex = extract_answer(text)
    assert ex == Extraction(None, "invalid")
    assert not ex.valid
    assert grade(text, "5") == (ex, False)


def test_non_string_input_is_invalid() -> None:
    assert extract_answer(None).method == "invalid"  # type: ignore[arg-type]


def test_extraction_counts() -> None:
    exs = [extract_answer(t) for t in ["The answer is 1.", "\\boxed{2}", "#### 3", "4 apples", "??", "!!"]]
    assert extraction_counts(exs) == {"answer_is": 1, "boxed": 1, "hash": 1, "last_number": 1, "invalid": 2}


def test_unknown_kind_names_allowed() -> None:
    with pytest.raises(ValueError, match="kind='latex'.*math, choice, integer"):
        extract_answer("5", "latex")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# extraction: choice and integer
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "method"),
    [
        ("The answer is (B).", "B", "answer_is"),
        ("Answer: C", "C", "answer_is"),
        ("The answer is **D**", "D", "answer_is"),
        ("the answer is $\\text{(C)}$", "C", "answer_is"),
        ("I think it is \\boxed{A}", "A", "boxed"),
        ("B", "B", "choice_letter"),
        ("(D)", "D", "choice_letter"),
        ("A. Kidney", "A", "choice_letter"),
        ("Between (A) and (C), the better one is (C)", "C", "choice_letter"),
        ("nothing here", None, "invalid"),
    ],
)
def test_extract_choice(text: str, value: str | None, method: str) -> None:
    assert extract_answer(text, "choice") == Extraction(value, method)


@pytest.mark.parametrize(
    ("text", "value", "method"),
    [
        ("The answer is 025.", "25", "answer_is"),
        ("\\boxed{025}", "25", "boxed"),
        ("so $m+n = \\boxed{73}$", "73", "boxed"),
        ("The answer is twenty. I computed 20.", "20", "last_number"),
        ("The answer is 1234.", None, "invalid"),  # out of 0-999: invalid, no digging for other numbers
        ("The answer is 3.5", None, "invalid"),
    ],
)
def test_extract_integer(text: str, value: str | None, method: str) -> None:
    assert extract_answer(text, "integer") == Extraction(value, method)


def test_to_int_and_to_choice() -> None:
    assert to_int("025") == 25 and to_int("25.0") == 25 and to_int(25.0) == 25 and to_int("\\boxed{7}") == 7
    assert to_int("3.5") is None and to_int("1/2") is None and to_int(None) is None
    assert to_choice("(b)") == "B" and to_choice(2) == "C" and to_choice("\\text{(D)}") == "D"
    assert to_choice("E") is None and to_choice("Because") is None


# ------------------------------------------------------------------------------------------------
# equivalence
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("54", "54"),
        ("$18.00", "18"),
        ("\\$18.00", "18"),
        ("18.00", "18"),
        ("1,234", "1234"),
        ("1234", "1,234"),
        ("5.5", "\\frac{11}{2}"),
        ("\\frac{11}{2}", "5.5"),
        ("\\dfrac{22}{4}", "\\frac{11}{2}"),
        ("-7", "-7.0"),
        ("3/4", "0.75"),
        ("18 dollars", "18"),
        ("x = 5", "5"),
        ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"),
        ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("\\text{(C)}", "\\text{(C)}"),
    ],
)
def test_equivalent_math(pred: str, gold: str) -> None:
    assert is_equivalent(pred, gold)


@pytest.mark.parametrize(
    ("pred", "gold"),
    [(None, "5"), ("", "5"), ("7", "-7"), ("5.5", "\\frac{11}{3}"), ("1235", "1,234"), ("x^2", "x^3")],
)
def test_not_equivalent_math(pred: str | None, gold: str) -> None:
    assert not is_equivalent(pred, gold)


def test_equivalent_integer_and_choice() -> None:
    assert is_equivalent("025", "25", "integer")
    assert is_equivalent("25", "025", "integer")
    assert not is_equivalent("26", "025", "integer")
    assert is_equivalent("(B)", "B", "choice")
    assert is_equivalent("b", "B", "choice")
    assert not is_equivalent("C", "B", "choice")
    assert not is_equivalent(None, "B", "choice")


def test_equivalence_off_the_main_thread() -> None:
    """math-verify's signal timeouts cannot run in a worker thread: grading must still work there."""
    results: list[object] = []

    def work() -> None:
        try:
            results.append(
                (is_equivalent("\\frac{22}{4}", "5.5"), is_equivalent("7", "8"), majority_vote(["1/2", "0.5", "3"]))
            )
        except Exception as exc:  # pragma: no cover - the failure is reported below
            results.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=60)
    assert results == [(True, False, "1/2")]


# ------------------------------------------------------------------------------------------------
# majority vote
# ------------------------------------------------------------------------------------------------


def test_majority_vote_clusters_equivalent_answers() -> None:
    assert majority_vote(["5", "\\frac{10}{2}", None, "6", "6"]) == "5"  # 5 = 10/2 beats 6 (2 vs 2: earliest)
    assert majority_vote(["6", "5", "5.0", "5.00", "6"]) == "5"
    assert majority_vote(["1/2", "0.5", "2"]) == "1/2"


def test_majority_vote_ties_go_to_the_earliest() -> None:
    assert majority_vote(["3", "4"]) == "3"
    assert majority_vote(["4", "3", "3", "4"]) == "4"


def test_majority_vote_none_never_wins() -> None:
    assert majority_vote([None, None, "3"]) == "3"
    assert majority_vote([None, "", None]) is None
    assert majority_vote([]) is None


def test_majority_vote_choice_and_integer() -> None:
    assert majority_vote(["A", "(B)", "B", "A", "b"], "choice") == "(B)"
    assert majority_vote(["7", "025", "25"], "integer") == "025"


# ------------------------------------------------------------------------------------------------
# gold answers
# ------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------
# real benchmark data
# ------------------------------------------------------------------------------------------------


def test_gsm8k_gold_solutions_grade_correct() -> None:
    records = _jsonl("gsm8k/test.jsonl")
    assert len(records) == 1319
    misses = []
    for i, rec in enumerate(records):
        gold = normalize(rec, "gsm8k", "gsm8k", i)["answer"]
        ex, ok = grade(rec["answer"], gold, "math")
        # and once through math-verify itself: "\\$1,234" differs from "1234" as a string
        ok_mv = is_equivalent(f"\\${int(gold):,}", gold) if ok else False
        if not (ok and ok_mv):
            misses.append((i, ex, gold, ok, ok_mv))
    assert not misses, f"{len(misses)} GSM8K gold solutions not accepted: {misses[:20]}"


def _math500_misses(records: list[dict], pred_of) -> list[str]:
    misses = []
    for rec in records:
        pred = pred_of(rec)
        if not is_equivalent(pred, rec["answer"]):
            misses.append(f"{rec['unique_id']}: pred={pred!r} gold={rec['answer']!r}")
    return misses


def test_math500_last_boxed_matches_answer() -> None:
    records = _jsonl("math/math500_test.jsonl")
    assert len(records) == 500
    misses = _math500_misses(records, lambda r: last_boxed(r["solution"]))
    assert len(misses) <= 0.01 * len(records), f"{len(misses)} misses:\n" + "\n".join(misses)


def test_math500_extraction_pipeline_matches_answer() -> None:
    records = _jsonl("math/math500_test.jsonl")
    misses = _math500_misses(records, lambda r: extract_answer(r["solution"]).value)
    assert len(misses) <= 0.01 * len(records), f"{len(misses)} misses:\n" + "\n".join(misses)


def test_math500_math_verify_path() -> None:
    """The same pairs through math-verify itself (different surface strings, no string shortcut)."""
    records = _jsonl("math/math500_test.jsonl")
    misses = _math500_misses(records, lambda r: f"$\\boxed{{{last_boxed(r['solution'])}}}$")
    assert len(misses) <= 0.01 * len(records), f"{len(misses)} misses:\n" + "\n".join(misses)


def test_aime24_zero_padded_answers() -> None:
    records = _jsonl("aime/aime24.qwen25math.jsonl")
    assert any(r["answer"].startswith("0") for r in records)
    for i, rec in enumerate(records):
        gold = normalize(rec, "aime", "aime24", i)["answer"]
        assert gold == str(int(rec["answer"]))
        ex, ok = grade(f"So the sum is $\\boxed{{{rec['answer']}}}$.", gold, "integer")
        assert ok and ex.value == gold, (rec["id"], rec["answer"], ex)
        assert is_equivalent(rec["answer"], gold, "integer")
        assert is_equivalent(rec["answer"], gold, "math")  # math-verify reads "025" as 25 too


def test_aime_2022_2025_int_answers() -> None:
    records = _jsonl("aime/aime_2022_2025.jsonl")
    for i, rec in enumerate(records):
        gold = normalize(rec, "aime", "aime", i)["answer"]
        ex, ok = grade(f"The answer is {int(rec['answer']):03d}.", gold, "integer")
        assert ok, (rec["id"], rec["answer"], ex)


def test_mmlu_stem_letters() -> None:
    records = _jsonl("mmlu/mmlu_stem_test.qwen25math.jsonl")
    for i, rec in enumerate(records):
        gold = normalize(rec, "mmlu", "mmlu", i)["answer"]
        assert gold in "ABCD"
        ex, ok = grade(f"Let me think.\nThe answer is ({gold}).", gold, "choice")
        assert ok and ex.method == "answer_is"
        wrong = "ABCD"[("ABCD".index(gold) + 1) % 4]
        assert not grade(f"Answer: {wrong}", gold, "choice")[1]


def test_the_one_per_problem_majority():
    """evaluation.majority_trace is the one home of the per-problem majority (accuracy and failure cases)."""
    from qmr.evaluation import majority_correct, majority_trace

    traces = [
        {"id": "p", "sample": 2, "pred": "1/2", "correct": True},
        {"id": "p", "sample": 0, "pred": "3", "correct": False},
        {"id": "p", "sample": 1, "pred": "0.5", "correct": True},
        {"id": "q", "sample": 0, "pred": "7", "correct": False},
    ]
    assert majority_trace([t for t in traces if t["id"] == "p"])["sample"] in (1, 2)  # 0.5 == 1/2 outvote 3
    assert majority_correct(traces) == {"p": True, "q": False}
