"""Answer extraction and equivalence grading (math-verify), majority vote, benchmark gold answers.

Extraction is a named pipeline in the style of lm-evaluation-harness: each rule is tried in order and
the first one that yields a usable value wins; when none does, the result is a counted ``invalid``
outcome (``Extraction(None, "invalid")``), never an exception.

``kind`` selects the answer space:

- ``"math"`` (GSM8K, MATH, AMC, Minerva): ``answer_is`` (the last "The answer is X", "The final answer
  is X" or "Final answer: X"; "our answer is correct" does not count; a ``\\boxed{}`` inside X is unwrapped)
  → ``boxed`` (the last ``\\boxed{...}`` / ``\\fbox{...}``, balanced braces) → ``hash`` (GSM8K gold style
  ``#### X``) → ``last_number`` (the last number in the text: commas, decimals, negatives, ``3/4``).
- ``"integer"`` (AIME): the same rules; a rule whose value is not an integer ("twenty", "3.5") is
  skipped, one whose integer is outside 0–999 makes the result invalid; values are canonical
  (``"025"`` → ``"25"``).
- ``"choice"`` (MMLU): a letter A–D from ``answer_is`` ("The answer is (B)", "Answer: B"), ``boxed``
  (``\\boxed{B}``) or ``choice_letter`` (a lone letter, a leading "B." or the last "(B)").

Equivalence for ``"math"`` is math-verify's (``parse`` + ``verify``, gold first). math-verify's
timeouts use ``signal.alarm``, which only works in the main thread; off the main thread the timeouts
are switched off (math-verify then cannot interrupt a pathological expression by itself).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

logger = logging.getLogger(__name__)

Kind = Literal["math", "choice", "integer"]
KINDS: tuple[str, ...] = ("math", "choice", "integer")
CHOICE_LETTERS = "ABCD"
INTEGER_RANGE = (0, 999)
METHODS: tuple[str, ...] = ("answer_is", "boxed", "hash", "last_number", "choice_letter", "invalid")
PARSE_TIMEOUT_S = 5
VERIFY_TIMEOUT_S = 5


@dataclass(frozen=True)
class Extraction:
    """The answer pulled out of a model output: ``value`` (None when invalid) and the rule that fired."""

    value: str | None
    method: str

    @property
    def valid(self) -> bool:
        return self.value is not None


INVALID = Extraction(None, "invalid")


# --------------------------------------------------------------------------------------------------
# small string helpers
# --------------------------------------------------------------------------------------------------

_ANSWER_IS_RE = re.compile(r"\b(?:the|final)\s+answer\s+is\b\s*:?|\bfinal\s+answer\s*:", re.IGNORECASE)
_CHOICE_ANCHOR_RE = re.compile(r"answer(?:\s+is\b|\s*:)", re.IGNORECASE)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_HASH_RE = re.compile(r"####[ \t]*([^\n]*)")
_NUMBER_RE = re.compile(
    r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)?"
)
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_PLAIN_NUMBER_RE = re.compile(r"^-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$")
_NUMBER_WITH_WORDS_RE = re.compile(r"^(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)\s+[A-Za-z][A-Za-z .]*$")
_INT_RE = re.compile(r"^[+-]?\d+(?:\.0*)?$")
_UNESCAPED_DOLLAR_RE = re.compile(r"(?<!\\)\$")
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textrm)\s*\{([^{}]*)\}")
_CHOICE_AFTER_ANCHOR_RE = re.compile(
    r"[\s:*\-]*(?:\$|\\\(|\\\[)?\s*(?:\\(?:text|textbf|mathrm|boxed)\s*\{)?\s*[(\[]?\s*"
    r"(?:(?:option|choice)\s*)?[(\[]?\s*([A-D])(?![A-Za-z0-9])",
    re.IGNORECASE,
)


def _balanced(text: str, open_index: int) -> tuple[str, int] | None:
    """The content of the ``{...}`` group opening at ``open_index`` and the index after it, or None."""
    depth = 0
    for i in range(open_index, len(text)):
        ch = text[i]
        if ch == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif ch == "}" and (i == 0 or text[i - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : i], i + 1
    return None


def _boxed_contents(text: str) -> list[str]:
    """Contents of every complete ``\\boxed{...}`` / ``\\fbox{...}`` (and ``\\boxed 5``) in order."""
    out: list[str] = []
    for m in _BOXED_RE.finditer(text):
        j = m.end()
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] == "{":
            group = _balanced(text, j)
            if group is not None and group[0].strip():
                out.append(group[0].strip())
        elif j > m.end():  # "\boxed 5" form: the next token
            tok = re.match(r"[^\s$]+", text[j:])
            if tok:
                out.append(tok.group(0).rstrip(".,;"))
    return out


def last_boxed(text: str) -> str | None:
    """The content of the last complete ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, or None."""
    found = _boxed_contents(text)
    return found[-1] if found else None


def _cut_sentence(value: str) -> str:
    """Cut ``value`` at the first sentence-ending period outside ``$...$`` and braces (or at a newline)."""
    depth = 0
    in_math = False
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "\n":
            return value[:i]
        if ch == "$":
            in_math = not in_math
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(0, depth - 1)
        elif ch == "." and not in_math and depth == 0:
            nxt = value[i + 1] if i + 1 < len(value) else ""
            if nxt == "" or nxt.isspace():
                return value[:i]
        i += 1
    return value


def _strip_wrappers(value: str) -> str:
    """Strip markdown bold, surrounding math delimiters, currency ``\\$`` and trailing punctuation."""
    prev = None
    v = value.strip()
    while v != prev:
        prev = v
        v = v.strip().strip("*").strip()
        v = v.rstrip(".,;:").strip()
        for left, right in (("$$", "$$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if v.startswith(left) and v.endswith(right) and len(v) >= len(left) + len(right):
                v = v[len(left) : len(v) - len(right)].strip()
        if v.startswith("$") and v.endswith("$") and len(v) >= 2 and v.count("$") == 2:
            v = v[1:-1].strip()
        elif v.startswith("$") and v.count("$") == 1:
            v = v[1:].strip()  # a currency sign: "$18.00"
        elif v.endswith("$") and v.count("$") == 1 and not v.endswith("\\$"):
            v = v[:-1].strip()
        if v.startswith("\\$"):
            v = v[2:].strip()
    return v


def _answer_is_value(text: str) -> str | None:
    matches = list(_ANSWER_IS_RE.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :]
    rest = rest.lstrip(" \t")
    if rest.startswith("\n"):  # "The answer is:\n\n$$42$$" — take the next non-empty line
        rest = rest.lstrip()
    value = _cut_sentence(rest)
    inner = last_boxed(value)
    if inner is not None:
        value = inner
    value = _strip_wrappers(value)
    return value or None


def _hash_value(text: str) -> str | None:
    matches = list(_HASH_RE.finditer(text))
    if not matches:
        return None
    value = _strip_wrappers(matches[-1].group(1))
    value = _THOUSANDS_RE.sub("", value)
    return value or None


def _number_tokens(text: str) -> list[str]:
    return [re.sub(r"\s+", "", _THOUSANDS_RE.sub("", m.group(0))) for m in _NUMBER_RE.finditer(text)]


def _last_number(text: str) -> str | None:
    tokens = _number_tokens(text)
    return tokens[-1] if tokens else None


def _clean_latex_text(value: str) -> str:
    v = _strip_wrappers(value)
    inner = last_boxed(v)
    if inner is not None:
        v = inner
    for _ in range(3):
        v = _TEXT_WRAP_RE.sub(r"\1", v)
    return _strip_wrappers(v.replace("\\!", "").replace("\\,", "").replace("{,}", ","))


def to_int(value: str | int | float | None) -> int | None:
    """An integer from ``value`` ("025", "25.0", "\\boxed{25}", "25 degrees", 25.0), or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    v = _clean_latex_text(str(value))
    v = _THOUSANDS_RE.sub("", v).replace(" ", "")
    if _INT_RE.match(v):
        return int(float(v)) if "." in v else int(v)
    tokens = _number_tokens(_clean_latex_text(str(value)))
    if len(tokens) == 1 and _INT_RE.match(tokens[0]):
        t = tokens[0]
        return int(float(t)) if "." in t else int(t)
    return None


def to_choice(value: str | int | None) -> str | None:
    """A letter A–D from ``value`` ("B", "(B)", "b", "\\text{(B)}", "B. text", 1 → "B"), or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return CHOICE_LETTERS[value] if 0 <= value < len(CHOICE_LETTERS) else None
    v = _clean_latex_text(str(value))
    m = re.match(r"^[(\[]?\s*([A-Da-d])\s*[)\]]?[.:]?$", v)  # "B", "(b)", "B."
    if m is None:
        m = re.match(r"^[(\[]?([A-D])[)\]]?[.:)]\s", v)  # "B. Kidney", "(B) Kidney"
    return m.group(1).upper() if m else None


# --------------------------------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"grading kind={kind!r} is not supported; allowed: {', '.join(KINDS)}")


def _extract_choice(text: str) -> Extraction:
    anchors = list(_CHOICE_ANCHOR_RE.finditer(text))
    for anchor in reversed(anchors):
        m = _CHOICE_AFTER_ANCHOR_RE.match(text, anchor.end())
        if m and m.group(1).isupper():
            return Extraction(m.group(1), "answer_is")
    for content in reversed(_boxed_contents(text)):
        letter = to_choice(content)
        if letter is not None:
            return Extraction(letter, "boxed")
    stripped = text.strip()
    m = re.match(r"^\**[(\[]?([A-D])[)\]]?\**(?:[.:)]|\s*$)", stripped)
    if m:
        return Extraction(m.group(1), "choice_letter")
    parens = re.findall(r"\(([A-D])\)", text)
    if parens:
        return Extraction(parens[-1], "choice_letter")
    return INVALID


def extract_answer(text: str, kind: Kind = "math") -> Extraction:
    """Pull the final answer out of a model output (or a gold solution) with the named rule pipeline.

    Never raises on odd text: when no rule yields a value the result is ``Extraction(None, "invalid")``.
    """
    _check_kind(kind)
    if not isinstance(text, str) or not text.strip():
        return INVALID
    if kind == "choice":
        return _extract_choice(text)

    rules = (
        ("answer_is", _answer_is_value),
        ("boxed", last_boxed),
        ("hash", _hash_value),
        ("last_number", _last_number),
    )
    for method, rule in rules:
        value = rule(text)
        if kind == "integer" and value:
            n = to_int(value)
            if n is None:
                continue  # not an integer ("twenty-five", "3.5"): try the next rule
            if not (INTEGER_RANGE[0] <= n <= INTEGER_RANGE[1]):
                return INVALID  # the model did answer, just not an AIME answer: don't dig further
            value = str(n)
        if value:
            return Extraction(value, method)
    return INVALID


def extraction_counts(extractions: Iterable[Extraction]) -> dict[str, int]:
    """How often each rule fired (``invalid`` included), for metrics."""
    counts = Counter(e.method for e in extractions)
    return dict(sorted(counts.items(), key=lambda kv: METHODS.index(kv[0]) if kv[0] in METHODS else 99))


# --------------------------------------------------------------------------------------------------
# equivalence (math-verify)
# --------------------------------------------------------------------------------------------------


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _normalize_math_string(value: str) -> str:
    """Light clean-up before math-verify: wrappers, thousands separators, trailing unit words."""
    v = _strip_wrappers(value)
    if _PLAIN_NUMBER_RE.match(v):
        return _THOUSANDS_RE.sub("", v)
    m = _NUMBER_WITH_WORDS_RE.match(v)
    if m:  # "18 dollars", "5 apples"
        return _THOUSANDS_RE.sub("", m.group(1))
    return v


@lru_cache(maxsize=16384)
def _parse_math(value: str, use_timeout: bool) -> tuple[Any, ...]:
    """math-verify parse of an already-extracted answer string (cached; gold strings repeat a lot)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    timeout = PARSE_TIMEOUT_S if use_timeout else None
    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    v = _normalize_math_string(value)
    if not v:
        return ()
    # A bare answer is math content: wrap it in $...$ so the LaTeX extractor reads it whole.
    doc = v if (_UNESCAPED_DOLLAR_RE.search(v) or "\\boxed" in v) else f"${v}$"
    result = list(parse(doc, configs, parsing_timeout=timeout))
    if not _has_sympy(result):
        raw = list(parse(v, [ExprExtractionConfig()], parsing_timeout=timeout))
        if _has_sympy(raw):
            result = raw + [r for r in result if isinstance(r, str)]
    return tuple(result)


def _has_sympy(parsed: Iterable[Any]) -> bool:
    return any(not isinstance(p, str) for p in parsed)


def _math_equivalent(pred: str, gold: str) -> bool:
    from math_verify import verify

    main = _in_main_thread()
    gold_parsed = _parse_math(gold, main)
    pred_parsed = _parse_math(pred, main)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(
        verify(list(gold_parsed), list(pred_parsed), timeout_seconds=VERIFY_TIMEOUT_S if main else None)
    )


def is_equivalent(pred: str | None, gold: str, kind: Kind = "math") -> bool:
    """Whether the extracted answer ``pred`` matches the reference ``gold``.

    ``math``: math-verify (gold first), so "1,234" = "1234", "18.00" = "$18" and "\\frac{11}{2}" = "5.5".
    ``integer``: integer values ("025" = "25"); falls back to math-verify when either side is not an
    integer. ``choice``: letters. ``None`` (an invalid extraction) is never correct.
    """
    _check_kind(kind)
    if pred is None or gold is None:
        return False
    pred_s, gold_s = str(pred).strip(), str(gold).strip()
    if not pred_s or not gold_s:
        return False
    if kind == "choice":
        p, g = to_choice(pred_s), to_choice(gold_s)
        return p is not None and p == g
    if kind == "integer":
        p_int, g_int = to_int(pred_s), to_int(gold_s)
        if p_int is not None and g_int is not None:
            return p_int == g_int
    if pred_s == gold_s:
        return True
    return _math_equivalent(pred_s, gold_s)


def grade(text: str, gold: str, kind: Kind = "math") -> tuple[Extraction, bool]:
    """Extract the answer from ``text`` and judge it against ``gold``."""
    extraction = extract_answer(text, kind)
    return extraction, is_equivalent(extraction.value, gold, kind)


# --------------------------------------------------------------------------------------------------
# majority vote
# --------------------------------------------------------------------------------------------------


def _vote_key(value: str, kind: str) -> str:
    if kind == "choice":
        letter = to_choice(value)
        return letter if letter is not None else value.strip()
    if kind == "integer":
        n = to_int(value)
        if n is not None:
            return str(n)
    return re.sub(r"\s+", "", _normalize_math_string(value))


def majority_vote(values: list[str | None], kind: Kind = "math") -> str | None:
    """The answer of the largest cluster of equivalent values; ties go to the earliest sample.

    None (invalid) values never win; the result is None only when every value is None or empty.
    The winner is returned as it was first written (the cluster's earliest member).
    """
    _check_kind(kind)
    reps: list[str] = []
    keys: list[str] = []
    counts: list[int] = []
    for value in values:
        if value is None or not str(value).strip():
            continue
        v = str(value)
        key = _vote_key(v, kind)
        for i, (rep, rep_key) in enumerate(zip(reps, keys, strict=True)):
            if key == rep_key or (kind == "math" and is_equivalent(v, rep, kind)):
                counts[i] += 1
                break
        else:
            reps.append(v)
            keys.append(key)
            counts.append(1)
    if not reps:
        return None
    best = max(range(len(reps)), key=lambda i: (counts[i], -i))
    return reps[best]


__all__ = [
    "CHOICE_LETTERS",
    "INVALID",
    "KINDS",
    "METHODS",
    "Extraction",
    "Kind",
    "extract_answer",
    "extraction_counts",
    "grade",
    "is_equivalent",
    "last_boxed",
    "majority_vote",
    "to_choice",
    "to_int",
]
