"""Exact arithmetic over the claims a solution writes down (``expr = value``), with Fractions.

Shared by the offline judges. `normalize_math` rewrites the usual spellings into plain operators:
thousands separators (``80,000``), ``×``/``x`` between numbers/``*``/``\\times``/``\\cdot``/``·``,
``÷``/``/``/``\\div``, ``\\frac{a}{b}`` (and ``\\dfrac``, ``\\tfrac``, ``\\frac12``), braces and
``\\left( \\right)``, ``$`` and ``\\$``, Unicode minus. `claims_in` finds every maximal run of numbers,
operators, parentheses and ``=`` and turns each adjacent pair of a chain ``a + b = c = d`` into a claim;
GSM8K calculator annotations ``<<a*b=c>>`` are claims too (and are removed from the text afterwards).

Guards against false alarms: a side glued to a word or a LaTeX command (``\\sqrt{16} = 4``,
``x_2 = 3``, ``= 12%``, ``= 4x``) is not a claim; a chain piece starting with a binary operator right
after a word (``3 eggs - 4 = 9``) is dropped; a decimal written with d places may differ from the exact
value by less than 10^-d (rounding or truncation); ``≈`` is never a claim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

from qmr.steps import CALCULATOR_ANNOTATION

# --------------------------------------------------------------------------------------------------
# normalization

_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_FRAC_SHORT = re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox|operatorname)\s*\{[^{}]*\}")
_THOUSANDS = re.compile(r"(?<![\d.,])(\d{1,3}(?:,\d{3})+)(?![\d]|,\d)")
_TIMES_X = re.compile(r"(?<=[\d)])\s*[xX]\s*(?=[\d(])")
_ANNOTATION = CALCULATOR_ANNOTATION


def normalize_math(text: str) -> str:
    t = text
    t = _TEXT_CMD.sub(" ", t)
    t = re.sub(r"\\[\[\]()]", " ", t)  # \( \) \[ \] math delimiters
    for _ in range(8):  # innermost \frac first
        new = _FRAC.sub(r"((\1)/(\2))", t)
        if new == t:
            break
        t = new
    t = _FRAC_SHORT.sub(r"(\1/\2)", t)
    for src, dst in (
        ("\\times", "*"),
        ("\\cdot", "*"),
        ("\u00d7", "*"),  # ×
        ("\u00b7", "*"),  # ·
        ("\u22c5", "*"),  # ⋅
        ("\u2217", "*"),  # ∗
        ("\\div", "/"),
        ("\u00f7", "/"),  # ÷
        ("\u2212", "-"),  # − minus sign
        ("\\left", ""),
        ("\\right", ""),
        ("\\$", " "),
        ("$", " "),
        ("\\,", ""),
        ("\\!", ""),
        ("\\;", " "),
        ("\\%", "%"),
        ("**", "^"),
    ):
        t = t.replace(src, dst)
    t = t.replace("{", "(").replace("}", ")")
    t = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), t)
    t = _TIMES_X.sub("*", t)
    return t


# --------------------------------------------------------------------------------------------------
# exact evaluation

_TOKEN = re.compile(
    r"(?P<num>\d+(?:\.\d+)?|\.\d+)|(?P<op>[-+*/^])|(?P<lp>\()|(?P<rp>\))|(?P<eq>=)|(?P<ws>\s+)|(?P<other>.)",
    re.S,
)


@dataclass(frozen=True)
class Tok:
    kind: str  # num op lp rp eq ws other
    text: str
    start: int
    end: int


def tokenize(text: str) -> list[Tok]:
    return [Tok(m.lastgroup or "other", m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


class _Parser:
    def __init__(self, toks: list[Tok]):
        self.toks = [t for t in toks if t.kind != "ws"]
        self.i = 0

    def peek(self) -> Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def parse(self) -> Fraction:
        value = self.expr()
        if self.peek() is not None:
            raise ValueError("trailing tokens")
        return value

    def expr(self) -> Fraction:
        value = self.term()
        while (t := self.peek()) is not None and t.kind == "op" and t.text in "+-":
            self.take()
            rhs = self.term()
            value = value + rhs if t.text == "+" else value - rhs
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while True:
            t = self.peek()
            if t is not None and t.kind == "op" and t.text in "*/":
                self.take()
                rhs = self.unary()
                if t.text == "*":
                    value = value * rhs
                else:
                    if rhs == 0:
                        raise ZeroDivisionError
                    value = value / rhs
            elif t is not None and t.kind == "lp":  # implicit multiplication: 2(3+4), (2)(3)
                value = value * self.unary()
            else:
                return value

    def unary(self) -> Fraction:
        t = self.peek()
        if t is not None and t.kind == "op" and t.text in "+-":
            self.take()
            v = self.unary()
            return -v if t.text == "-" else v
        return self.power()

    def power(self) -> Fraction:
        base = self.primary()
        t = self.peek()
        if t is not None and t.kind == "op" and t.text == "^":
            self.take()
            exp = self.unary()
            if exp.denominator != 1 or abs(exp) > 64 or (base == 0 and exp < 0):
                raise ValueError("unsupported power")
            if abs(base.numerator) > 10**12 or abs(base.denominator) > 10**12:
                raise ValueError("power too large")
            return base ** int(exp)
        return base

    def primary(self) -> Fraction:
        t = self.peek()
        if t is None:
            raise ValueError("unexpected end")
        if t.kind == "num":
            self.take()
            return Fraction(t.text)
        if t.kind == "lp":
            self.take()
            value = self.expr()
            close = self.peek()
            if close is None or close.kind != "rp":
                raise ValueError("unbalanced")
            self.take()
            return value
        raise ValueError(f"unexpected {t.text!r}")


def evaluate_tokens(toks: list[Tok]) -> Fraction | None:
    if not any(t.kind == "num" for t in toks):
        return None
    try:
        return _Parser(toks).parse()
    except (ValueError, ZeroDivisionError, IndexError, OverflowError):
        return None


def evaluate(expr: str) -> Fraction | None:
    """Exact value of an arithmetic expression (after `normalize_math`), or None if it is not one."""
    return evaluate_tokens(tokenize(normalize_math(expr)))


def parse_number(text: str | None) -> Fraction | None:
    """A plain number ("1,234", "$18", "-3.5", "\\frac{1}{2}", "3/4"); None if ``text`` is not one."""
    if text is None:
        return None
    s = str(text).strip().rstrip(".").strip()
    s = re.sub(r"^\\boxed\{(.*)\}$", r"\1", s.strip("$ ")).strip()
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "").strip()
    toks = [t for t in tokenize(normalize_math(s)) if t.kind != "ws"]
    if not toks or any(t.kind not in ("num", "op", "lp", "rp") for t in toks):
        return None
    if sum(t.kind == "op" and t.text in "*+^" for t in toks) or len(toks) > 12:
        return None
    return evaluate_tokens(toks)


def decimals(literal: str) -> int:
    return len(literal.split(".", 1)[1]) if "." in literal else 0


# --------------------------------------------------------------------------------------------------
# claims


@dataclass
class Claim:
    """One checked equality: ``lhs = rhs`` found in step ``step`` (1-indexed; 0 when not in a trace)."""

    lhs: str
    rhs: str
    lhs_value: Fraction
    rhs_value: Fraction
    ok: bool
    kind: str = "inline"  # inline | annotation
    step: int = 0
    #: the numbers written on the computing side (the side with an operator; lhs if both/neither)
    operands: list[Fraction] = field(default_factory=list)
    #: value of the computing side and the value the step claims for it
    computed: Fraction | None = None
    claimed: Fraction | None = None

    def describe(self) -> str:
        return f"{self.lhs.strip()} = {self.rhs.strip()}"


def _fmt(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    f = float(value)
    return f"{value.numerator}/{value.denominator} (≈{f:.6g})"


def format_value(value: Fraction | None) -> str:
    return "?" if value is None else _fmt(value)


def _side_info(toks: list[Tok]) -> tuple[bool, bool, int]:
    """(is a bare number, has an operator, decimals of a bare number)."""
    core = [t for t in toks if t.kind not in ("ws",)]
    has_op = any(t.kind == "op" for t in core[1:])
    bare = (
        len(core) == 1
        and core[0].kind == "num"
        or (len(core) == 2 and core[0].kind == "op" and core[0].text == "-" and core[1].kind == "num")
    )
    d = decimals(core[-1].text) if bare else 0
    return bare, has_op, d


def values_equal(computed: Fraction, claimed: Fraction, claimed_decimals: int) -> bool:
    """Exact for integers; a decimal with d places may be off by less than 10^-d (rounded/truncated)."""
    if claimed_decimals <= 0:
        return computed == claimed
    return abs(computed - claimed) < Fraction(1, 10**claimed_decimals)


def _strip_parts(part: list[Tok], first: bool, last: bool) -> list[Tok]:
    core = [t for t in part if t.kind != "ws"]
    if first:  # drop unmatched leading "("
        while (
            core
            and core[0].kind == "lp"
            and sum(t.kind == "lp" for t in core) > sum(t.kind == "rp" for t in core)
        ):
            core = core[1:]
    if last:  # drop unmatched trailing ")"
        while (
            core
            and core[-1].kind == "rp"
            and sum(t.kind == "rp" for t in core) > sum(t.kind == "lp" for t in core)
        ):
            core = core[:-1]
    return core


_RUN_KINDS = {"num", "op", "lp", "rp", "eq", "ws"}


def _glued(ch: str) -> bool:
    return ch.isalnum() or ch in "\\_%'"


def _runs(toks: list[Tok]) -> list[list[Tok]]:
    runs: list[list[Tok]] = []
    cur: list[Tok] = []
    for t in toks:
        if t.kind in _RUN_KINDS:
            cur.append(t)
        else:
            if cur:
                runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


def _numbers(toks: list[Tok]) -> list[Fraction]:
    out: list[Fraction] = []
    core = [t for t in toks if t.kind != "ws"]
    for i, t in enumerate(core):
        if t.kind != "num":
            continue
        v = Fraction(t.text)
        if (
            i > 0
            and core[i - 1].kind == "op"
            and core[i - 1].text == "-"
            and (i == 1 or core[i - 2].kind in ("lp", "op"))
        ):
            v = -v
        out.append(v)
    return out


def _chain_claims(text: str, run: list[Tok]) -> list[Claim]:
    core = [t for t in run if t.kind != "ws"]
    if not any(t.kind == "eq" for t in core):
        return []
    parts: list[list[Tok]] = [[]]
    for t in core:
        if t.kind == "eq":
            parts.append([])
        else:
            parts[-1].append(t)
    n = len(parts)
    cleaned = [_strip_parts(p, i == 0, i == n - 1) for i, p in enumerate(parts)]
    usable = [bool(p) for p in cleaned]
    # the first part: glued to a word/command before it, or starting with a binary operator -> unusable
    if cleaned[0]:
        start = cleaned[0][0].start
        before = text[start - 1] if start > 0 else " "
        prev_nonspace = text[:start].rstrip()[-1:] or ":"
        head = cleaned[0][0]
        if _glued(before):
            usable[0] = False
        elif head.kind == "op" and (head.text != "-" or prev_nonspace not in "(:=,;[{"):
            usable[0] = False
    # the last part: glued to what follows (=12%, =4x) or ending with an operator -> unusable
    if cleaned[-1]:
        end = cleaned[-1][-1].end
        after = text[end] if end < len(text) else " "
        if _glued(after) or after == "(" or cleaned[-1][-1].kind == "op":
            usable[-1] = False
    chain_has_op = any(_side_info(p)[1] for p, u in zip(cleaned, usable, strict=True) if u and p)
    claims: list[Claim] = []
    for i in range(n - 1):
        left, right = cleaned[i], cleaned[i + 1]
        if not (usable[i] and usable[i + 1] and left and right):
            continue
        lv, rv = evaluate_tokens(left), evaluate_tokens(right)
        if lv is None or rv is None:
            continue
        lbare, lop, ld = _side_info(left)
        rbare, rop, rd = _side_info(right)
        if not (lop or rop) and not chain_has_op:
            continue  # "2 = 3" outside any computation: not a claim
        if rbare or not lbare:
            comp_side, computed, claimed, d = left, lv, rv, (rd if rbare else 0)
        else:
            comp_side, computed, claimed, d = right, rv, lv, ld
        ok = values_equal(computed, claimed, d)
        lhs_text = text[left[0].start : left[-1].end]
        rhs_text = text[right[0].start : right[-1].end]
        claims.append(
            Claim(
                lhs_text,
                rhs_text,
                lv,
                rv,
                ok,
                "inline",
                operands=_numbers(comp_side),
                computed=computed,
                claimed=claimed,
            )
        )
    return claims


def annotation_claims(text: str) -> list[Claim]:
    """GSM8K calculator annotations ``<<expr=value>>`` as claims."""
    out: list[Claim] = []
    for m in _ANNOTATION.finditer(text):
        expr, value = m.group(1), m.group(2)
        lv, rv = evaluate(expr), evaluate(value)
        if lv is None or rv is None:
            continue
        toks = [t for t in tokenize(normalize_math(value)) if t.kind != "ws"]
        d = decimals(toks[-1].text) if len(toks) == 1 and toks[0].kind == "num" else 0
        ok = values_equal(lv, rv, d)
        operands = _numbers(tokenize(normalize_math(expr)))
        out.append(Claim(expr, value, lv, rv, ok, "annotation", operands=operands, computed=lv, claimed=rv))
    return out


def claims_in(text: str, step: int = 0) -> list[Claim]:
    """Every arithmetic claim in ``text``: calculator annotations first, then inline ``expr = value``."""
    claims = annotation_claims(text)
    rest = _ANNOTATION.sub(" ", text)
    norm = normalize_math(rest)
    toks = tokenize(norm)
    for run in _runs(toks):
        claims.extend(_chain_claims(norm, run))
    for c in claims:
        c.step = step
    return claims


def numbers_in(text: str) -> list[Fraction]:
    """Every number literal in ``text`` (thousands separators and ``N%`` -> N and N/100 handled)."""
    norm = normalize_math(_ANNOTATION.sub(" ", text))
    out: list[Fraction] = []
    for m in re.finditer(r"(?<![\w.])(\d+(?:\.\d+)?|\.\d+)(\s*%)?", norm):
        v = Fraction(m.group(1))
        out.append(v)
        if m.group(2):
            out.append(v / 100)
    return out


_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "dozen": 12, "half": 2, "twice": 2, "double": 2, "triple": 3, "thrice": 3, "quarter": 4, "third": 3,
    "fourth": 4, "fifth": 5, "tenth": 10, "percent": 100,
}  # fmt: skip


def context_numbers(text: str) -> set[Fraction]:
    """Numbers a reader can take from a problem statement: literals, percentages, number words."""
    out = set(numbers_in(text))
    for w in re.findall(r"[A-Za-z]+", text.lower()):
        if w in _NUMBER_WORDS:
            out.add(Fraction(_NUMBER_WORDS[w]))
        elif w.endswith("s") and w[:-1] in _NUMBER_WORDS:
            out.add(Fraction(_NUMBER_WORDS[w[:-1]]))
    if {"half", "halves"} & set(re.findall(r"[a-z]+", text.lower())):
        out.add(Fraction(1, 2))
    return out


def subexpression_values(expr: str) -> set[Fraction]:
    """Values of an expression's left-associative partial results and parenthesized groups.

    ``16-3-4`` gives {13, 9}; ``(2+3)*4`` gives {5, 20}. Used to accept a trace that splits one gold
    computation into several steps.
    """
    toks = [t for t in tokenize(normalize_math(expr)) if t.kind != "ws"]
    out: set[Fraction] = set()
    full = evaluate_tokens(toks)
    if full is not None:
        out.add(full)
    # prefixes ending before a + or - at depth 0, and before * or / at depth 0
    depth = 0
    for i, t in enumerate(toks):
        if t.kind == "lp":
            depth += 1
        elif t.kind == "rp":
            depth -= 1
        elif t.kind == "op" and depth == 0 and i > 0:
            v = evaluate_tokens(toks[:i])
            if v is not None:
                out.add(v)
    # parenthesized groups
    stack: list[int] = []
    for i, t in enumerate(toks):
        if t.kind == "lp":
            stack.append(i)
        elif t.kind == "rp" and stack:
            j = stack.pop()
            v = evaluate_tokens(toks[j + 1 : i])
            if v is not None:
                out.add(v)
    return out


_ANSWER_PATTERNS = (
    re.compile(r"(?:answer|final\s+result)\s+is\s*:?\s*(.+?)\s*\.?\s*$", re.I | re.S),
    re.compile(r"####\s*(.+?)\s*$", re.S),
    re.compile(r"#\s*Answer\s*\n+\s*(.+?)\s*$", re.S),
    re.compile(r"\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}"),
)


def stated_answer(step: str) -> tuple[bool, Fraction | None]:
    """(does this step state the final answer?, its numeric value if it is a number)."""
    for pat in _ANSWER_PATTERNS:
        m = pat.search(step)
        if m:
            raw = m.group(1).strip()
            raw = re.sub(r"[\sA-Za-z]*\.?\s*$", "", raw) if re.match(r"^[-$\\\d.,]", raw) else raw
            return True, parse_number(raw)
    return False, None


# --------------------------------------------------------------------------------------------------
# prose: computations written in words, and the quantities a step states

_W = r"[A-Za-z][A-Za-z'’-]*"
_NUM_TXT = r"\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_PROSE_RULES: tuple[tuple[re.Pattern, str], ...] = (
    # "20% of 50", "20 percent of $50" -> (20/100*50)
    (re.compile(rf"(\d+(?:\.\d+)?)\s*(?:%|percent)\s+of\s+(?:the\s+|a\s+total\s+of\s+)?({_NUM_TXT})", re.I), r" (\1/100*\2)"),
    # "2/3 of 150" -> (2/3*150)
    (re.compile(rf"(?<![\d.])(\d+\s*/\s*\d+)\s+of\s+(?:the\s+)?({_NUM_TXT})", re.I), r" (\1*\2)"),
    # "half of 60", "a third of 90", "one quarter of 12", "three quarters of 40"
    (re.compile(rf"\b(?:a|one)?\s*half\s+of\s+(?:the\s+)?({_NUM_TXT})", re.I), r" (\1/2)"),
    (re.compile(rf"\b(?:a|one)\s+third\s+of\s+(?:the\s+)?({_NUM_TXT})", re.I), r" (\1/3)"),
    (re.compile(rf"\b(?:a|one)\s+(?:quarter|fourth)\s+of\s+(?:the\s+)?({_NUM_TXT})", re.I), r" (\1/4)"),
    (re.compile(rf"\b(?:a|one)\s+fifth\s+of\s+(?:the\s+)?({_NUM_TXT})", re.I), r" (\1/5)"),
    (re.compile(rf"\btwo\s+thirds\s+of\s+(?:the\s+)?({_NUM_TXT})", re.I), r" (2*\1/3)"),
    (re.compile(rf"\bthree\s+(?:quarters|fourths)\s+of\s+(?:the\s+)?({_NUM_TXT})", re.I), r" (3*\1/4)"),
    (re.compile(rf"\b(?:twice|double)\s+(?:of\s+)?({_NUM_TXT})", re.I), r" (2*\1)"),
    # operators in words between numbers: "5 times 12", "60 minus 17", "45 divided by 5"
    (re.compile(r"(?<=[\d)])\s+(?:times|multiplied\s+by)\s+(?=[$(]?\d)", re.I), " * "),
    (re.compile(r"(?<=[\d)])\s+(?:divided\s+by|over)\s+(?=[$(]?\d)", re.I), " / "),
    (re.compile(r"(?<=[\d)])\s+(?:plus|and\s+another)\s+(?=[$(]?\d)", re.I), " + "),
    (re.compile(r"(?<=[\d)])\s+(?:minus|less)\s+(?=[$(]?\d)", re.I), " - "),
    # "x" between a noun and a number: "101 shirts x $5.80"
    (re.compile(r"(?<=[A-Za-z])\s+[xX]\s+(?=\$?\d)"), " * "),
)
#: a noun phrase (1-3 words) bound to a number inside a computation: "8 dog legs + 2 chicken legs = 12"
_BOUND_NOUNS = re.compile(rf"(?<=\d)(\s+{_W}(?:\s+{_W}){{0,2}})(?=\s*(?:[+*/×÷=]|\s-\s))")


def _drop_nouns(m: re.Match) -> str:
    """Drop the nouns after a number before an operator; before ``=`` only when an operator precedes
    the number (``8 legs + 2 legs = 10``, not ``30 less than Vika = 84 - 30``)."""
    after = m.string[m.end() :].lstrip()
    if after.startswith("="):
        head = m.string[: m.start()]
        if not re.search(r"[-+*/×÷]\s*\$?[\d.,]*\d$", head):
            return m.group(0)
    return ""


#: "is" / "equals" / "gives" after a computation written in words or symbols: "5 * 12 is 60"
_IS = re.compile(
    r"(?<=[\d)])(?:,?\s+(?:which|that)|\s+so\s+(?:that\s+)?(?:it|this|they))?\s+(?:is|are|was|were|equals|gives|makes|comes\s+to|=)\s+(?=\$?\d)",
    re.I,
)


def prose_to_math(text: str) -> str:
    """``text`` with computations written in prose turned into symbols, so `claims_in` reads them.

    ``20% of 50`` → ``(20/100*50)``, ``half of 60`` → ``(60/2)`` (third, quarter, fifth, two thirds,
    three quarters, twice), ``2/3 of 150`` → ``(2/3*150)``, ``5 times 12 is 60`` → ``5 * 12 = 60``
    (plus, minus, divided by), and the nouns bound to the numbers of a computation dropped
    (``8 dog legs + 2 chicken legs = 12 legs`` → ``8 + 2 = 12 legs``).
    """
    t = _ANNOTATION.sub(" ", text).replace("\u2013", "-").replace("\u2014", "-")
    for pat, rep in _PROSE_RULES:
        t = pat.sub(rep, t)
    t = re.sub(r"(?<=[A-Za-z])/[A-Za-z]+", "", t)  # "3 quarts/bag" -> "3 quarts"
    t = _BOUND_NOUNS.sub(_drop_nouns, t)
    # "is" turns into "=" only after a computation (an operator before it in the same clause)
    out = []
    last = 0
    for m in _IS.finditer(t):
        clause = re.split(r"[.,;:!?]\s|\n", t[last : m.start()])[-1]
        rhs_is_result = re.match(r"\$?[\d,]*\d(?:\.\d+)?(?!\s*[-+*/×÷(\d])", t[m.end() :])
        if rhs_is_result and re.search(r"\d\s*[-+*/×÷]\s*[$(]?\d|\d\)", clause):
            out.append(t[last : m.start()] + " = ")
            last = m.end()
    out.append(t[last:])
    return "".join(out)


def prose_claims(text: str, step: int = 0) -> list[Claim]:
    """`claims_in` over the step as written (annotations included) and over `prose_to_math` of it,
    without repeating a claim."""
    claims = claims_in(text, step)
    seen = {(c.computed, c.claimed) for c in claims}
    for c in claims_in(prose_to_math(text), step):
        if (c.computed, c.claimed) not in seen:
            seen.add((c.computed, c.claimed))
            claims.append(c)
    return claims


def one_step_reaches(x: Fraction, known: set[Fraction]) -> bool:
    """Whether one operation on two known numbers gives ``x`` (``a+b``, ``a-b``, ``a*b``, ``a/b``,
    ``a*b/100``)."""
    x = abs(x)
    ks = {abs(k) for k in known}
    for a in ks:
        if x - a in ks or a - x in ks or x + a in ks:
            return True
        if a != 0 and (x / a in ks or x * a in ks or x * 100 / a in ks):
            return True
    return False
