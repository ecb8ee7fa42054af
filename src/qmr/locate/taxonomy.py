"""The error taxonomy of the paper's annotation guide: 7 types in 4 categories, in precedence order.

Earliest-precedence rule: when several types apply to the first faulty step, the one listed first in
`TYPES` wins (`earliest`). ``no_error`` is a legal answer of a judge (e.g. ``5.5`` vs ``\\frac{11}{2}``
graded wrong by mistake); it is recorded as such, never forced into a type, and has no category.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

NO_ERROR = "no_error"

#: category code -> (name, types in precedence order)
CATEGORIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "CE": ("conceptual", ("conceptual_misunderstanding", "contextual_oversight")),
    "RE": ("reasoning", ("logical_reasoning_error",)),
    "ME": ("method", ("procedural_error", "formula_rule_error")),
    "EE": ("execution", ("computational_error", "symbolic_manipulation_error")),
}
CATEGORY_CODES: tuple[str, ...] = tuple(CATEGORIES)

#: the 7 types, earliest precedence first
TYPES: tuple[str, ...] = tuple(t for _, types in CATEGORIES.values() for t in types)
#: every answer a judge may give
ANSWERS: tuple[str, ...] = (*TYPES, NO_ERROR)

_CATEGORY_OF = {t: code for code, (_, types) in CATEGORIES.items() for t in types}
_RANK = {t: i for i, t in enumerate(TYPES)}

DESCRIPTIONS: dict[str, str] = {
    "conceptual_misunderstanding": "misunderstands a mathematical concept or what the problem asks",
    "contextual_oversight": "misreads, ignores or wrongly copies information from the problem or earlier steps",
    "logical_reasoning_error": "an invalid inference: the right quantities combined by the wrong relation or operation",
    "procedural_error": "skips, merges, reorders or repeats steps, or states an answer that does not follow from the work",
    "formula_rule_error": "applies a wrong formula or rule",
    "computational_error": "an arithmetic mistake in a correctly set-up calculation",
    "symbolic_manipulation_error": "a mistake manipulating expressions or equations (signs, expansion, simplification)",
}


def category_of(error_type: str | None) -> str | None:
    """Category code (CE/RE/ME/EE) of a type; None for ``no_error`` and None; ValueError if unknown."""
    if error_type is None or error_type == NO_ERROR:
        return None
    try:
        return _CATEGORY_OF[error_type]
    except KeyError:
        raise ValueError(f"error type: got {error_type!r}; allowed: {', '.join(ANSWERS)}") from None


def rank(error_type: str) -> int:
    """Precedence rank (0 = earliest); ``no_error`` ranks after every type."""
    if error_type == NO_ERROR:
        return len(TYPES)
    if error_type not in _RANK:
        raise ValueError(f"error type: got {error_type!r}; allowed: {', '.join(ANSWERS)}")
    return _RANK[error_type]


def earliest(types: Iterable[str | None]) -> str | None:
    """The earliest-precedence type among ``types`` (None ignored; ``no_error`` only if nothing else)."""
    present = [t for t in types if t is not None]
    if not present:
        return None
    return min(present, key=rank)


_ALIASES = {
    "none": NO_ERROR,
    "no error": NO_ERROR,
    "noerror": NO_ERROR,
    "correct": NO_ERROR,
    "computation error": "computational_error",
    "calculation error": "computational_error",
    "arithmetic error": "computational_error",
    "logical error": "logical_reasoning_error",
    "reasoning error": "logical_reasoning_error",
    "procedure error": "procedural_error",
    "formula error": "formula_rule_error",
    "rule error": "formula_rule_error",
    "symbolic error": "symbolic_manipulation_error",
    "conceptual error": "conceptual_misunderstanding",
    "context oversight": "contextual_oversight",
}


def normalize_type(value: object) -> str | None:
    """Map a judge's spelling ("Computational Error", "EE/computational_error") to a type; None if unknown."""
    if not isinstance(value, str):
        return None
    s = value.strip().lower()
    if not s:
        return None
    # "Execution Error > Computational Error", "EE: computational_error" -> the last part names the type
    for part in reversed(re.split(r"\s*(?:>|/|::|:|->|\|)\s*", s)):
        key = re.sub(r"[\s\-]+", "_", part.strip().strip(".\"'`*")).strip("_")
        if key in _RANK or key == NO_ERROR:
            return key
        spaced = key.replace("_", " ")
        if spaced in _ALIASES:
            return _ALIASES[spaced]
    return None
