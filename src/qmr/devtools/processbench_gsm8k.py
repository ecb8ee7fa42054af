"""GSM8K-style first-error items for `qmr judge-bench` (`qmr processbench-from-gsm8k`).

Real ProcessBench is not available offline; these items are built from GSM8K's worked solutions
(`processbench_from_gsm8k`): correct solutions, and solutions with one calculation corrupted whose
later steps carry the wrong value, so that step is the first error. Kept out of `qmr.processbench`,
which the ``prepare`` stage imports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from qmr.processbench import validate_processbench

GSM8K_ERROR_KINDS = ("slip", "operand", "operator")
GSM8K_ANNOTATIONS = ("keep", "strip", "prose")
_GSM_NUM = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?![\d])|(?<![\w.])\d+(?:\.\d+)?")
_GSM_OP = re.compile(r"[-+*/]")
_SWAP_OP = {"+": "-*", "-": "+", "*": "+/", "/": "*-"}


def _gsm_value(literal: str):
    from fractions import Fraction

    return Fraction(literal.replace(",", ""))


def _gsm_format(value, like: str = "") -> str:
    """A value written as GSM8K writes it: an integer, else at most 2 decimals (rounded); thousands
    separators when ``like`` had them."""
    if value.denominator == 1:
        s = str(value.numerator)
    else:
        s = f"{float(value):.2f}".rstrip("0").rstrip(".")
    if "," in like and "." not in s and "-" not in s:
        s = f"{int(s):,}"
    return s


@dataclass
class _Calc:
    line: int
    start: int  # span of the annotation <<expr=res>> in its line
    end: int
    expr: str
    result: str
    operands: list[tuple[int, int, str]]  # (start, end, literal) in expr
    refs: list[int | None]  # per operand: the earlier calc whose result it is, or None (given)


def _gsm_calcs(lines: list[str]) -> list[_Calc] | None:
    from qmr.steps import CALCULATOR_ANNOTATION

    calcs: list[_Calc] = []
    results: list = []
    for li, line in enumerate(lines):
        for m in CALCULATOR_ANNOTATION.finditer(line):
            expr, res = m.group(1), m.group(2).strip()
            if not re.fullmatch(r"[\d.+\-*/() ]+", expr) or not re.fullmatch(r"-?\d+(?:\.\d+)?", res):
                return None
            ops = [(x.start(), x.end(), x.group()) for x in re.finditer(r"\d+(?:\.\d+)?", expr)]
            refs: list[int | None] = []
            for _, _, lit in ops:
                v = _gsm_value(lit)
                refs.append(next((i for i in range(len(results) - 1, -1, -1) if results[i] == v), None))
            calcs.append(_Calc(li, m.start(), m.end(), expr, res, ops, refs))
            results.append(_gsm_value(res))
    return calcs


def _gsm_eval(expr: str):
    from qmr.locate.arith import evaluate

    return evaluate(expr)


def _corrupt_value(value, rng) -> Any:
    from fractions import Fraction

    if value.denominator != 1:
        return value + rng.choice((1, -1, Fraction(1, 2)))
    choices = [1, -1, 2, 10, -10] if value > 10 else [1, 2, 3]
    new = value + rng.choice(choices)
    if value >= 10 and rng.random() < 0.25:
        s = str(value.numerator)
        swapped = s[:-2] + s[-1] + s[-2]
        if swapped[0] != "0" and swapped != s:
            new = Fraction(int(swapped))
    return new


def _inline_span(line: str, calc: _Calc, values: list) -> list[tuple[int, int]] | None:
    """Spans of the operand literals of the text's own copy of ``calc`` right before its annotation
    (``5 * 12 = <<5*12=60>>``), or None when the text has no such copy."""
    head = line[: calc.start]
    m = re.search(r"=\s*\$?\s*$", head)
    if m is None:
        return None
    head = head[: m.start()]
    lits = list(_GSM_NUM.finditer(head))
    k = len(values)
    if len(lits) < k:
        return None
    cand = lits[-k:]
    if [_gsm_value(x.group()) for x in cand] != values:
        return None
    between = head[cand[0].start() : cand[-1].end()]
    if re.search(r"[A-Za-z]", between):
        return None
    return [(x.start(), x.end()) for x in cand]


def _gsm_corrupt(lines: list[str], calcs: list[_Calc], k: int, kind: str, rng) -> list[str] | None:
    """``lines`` with calc ``k`` corrupted (``kind``) and every later calc recomputed from the values
    the trace now carries; None when the corruption cannot be written consistently."""
    from fractions import Fraction

    new_res: list[Fraction] = []
    new_exprs: list[str] = []
    changed_ops: list[list[tuple[int, str]]] = []  # per calc: (operand index, new literal)
    op_swap: list[tuple[int, str] | None] = []
    for j, c in enumerate(calcs):
        lits = [lit for _, _, lit in c.operands]
        new_lits = list(lits)
        for q, ref in enumerate(c.refs):
            if ref is not None and new_res[ref] != _gsm_value(calcs[ref].result):
                new_lits[q] = _gsm_format(new_res[ref])
        swap = None
        if j == k and kind == "operand":
            given = [q for q, ref in enumerate(c.refs) if ref is None]
            if not given:
                return None
            q = rng.choice(given)
            v = _gsm_value(lits[q])
            alt = v + rng.choice((1, 2, -1, 5)) if v > 2 else v + rng.choice((1, 2))
            new_lits[q] = _gsm_format(alt)
        expr = c.expr
        for (s, e, _), lit in sorted(zip(c.operands, new_lits, strict=True), reverse=True):
            expr = expr[:s] + lit + expr[e:]
        if j == k and kind == "operator":
            ops = [m for m in _GSM_OP.finditer(expr) if m.start() > 0 and expr[m.start() - 1] not in "(*/+-"]
            if not ops:
                return None
            m = rng.choice(ops)
            new_op = rng.choice(_SWAP_OP[m.group()])
            swap = (ops.index(m), new_op)
            expr = expr[: m.start()] + new_op + expr[m.end() :]
        value = _gsm_eval(expr)
        if value is None or value < 0:
            return None
        if j == k and kind == "slip":
            value = _corrupt_value(value, rng)
        if value.denominator != 1 and (value * 100).denominator != 1:
            value = Fraction(round(value * 100), 100)  # written rounded, like GSM8K does
        if j == k and value == _gsm_value(c.result):
            return None
        new_res.append(value)
        new_exprs.append(expr)
        changed_ops.append([(q, lit) for q, (lit, old) in enumerate(zip(new_lits, lits, strict=True)) if lit != old])
        op_swap.append(swap)
    out = list(lines)
    old_to_new = {
        _gsm_value(c.result): new_res[j] for j, c in enumerate(calcs) if new_res[j] != _gsm_value(c.result)
    }
    for li in range(len(lines)):
        in_line = [j for j, c in enumerate(calcs) if c.line == li]
        if not in_line or all(j < k for j in in_line):
            continue
        line = lines[li]
        # edits as (start, end, text), applied right to left
        edits: list[tuple[int, int, str]] = []
        for j in in_line:
            c = calcs[j]
            old_vals = [_gsm_value(lit) for _, _, lit in c.operands]
            shown = _inline_span(line, c, old_vals)
            if changed_ops[j] or op_swap[j]:
                if shown is None and (op_swap[j] or re.search(r"=\s*\$?\s*$", line[: c.start])):
                    return None  # the text writes the computation in a way not read here
                if shown is not None:
                    for q, lit in changed_ops[j]:
                        s, e = shown[q]
                        edits.append((s, e, _gsm_format(_gsm_value(lit), line[s:e])))
                    if op_swap[j]:
                        idx, new_op = op_swap[j]
                        if len(shown) < 2 or idx >= len(shown) - 1:
                            return None
                        gap = line[shown[idx][1] : shown[idx + 1][0]]
                        gm = re.search(r"[-+*/x×÷]", gap)
                        if gm is None:
                            return None
                        sym = {"*": "*", "/": "/", "+": "+", "-": "-"}[new_op]
                        if gm.group() in "x×" and new_op == "*":
                            sym = gm.group()
                        p = shown[idx][1] + gm.start()
                        edits.append((p, p + 1, sym))
            res_lit = f"{new_exprs[j]}={_gsm_format(new_res[j])}"
            edits.append((c.start, c.end, f"<<{res_lit}>>"))
            after = _GSM_NUM.match(line, c.end) or _GSM_NUM.match(line, c.end + 1) if line[c.end : c.end + 1] == "$" else _GSM_NUM.match(line, c.end)
            if after is not None and _gsm_value(after.group()) == _gsm_value(c.result):
                edits.append((after.start(), after.end(), _gsm_format(new_res[j], after.group())))
        edits.sort(reverse=True)
        for (s, e, t), prev in zip(edits, [None, *edits[:-1]], strict=True):
            if prev is not None and e > prev[0]:
                return None  # overlapping edits
            line = line[:s] + t + line[e:]
        out[li] = line
    # plain mentions of a changed value in later lines' prose (outside computations)
    last_line = calcs[k].line
    for li in range(last_line + 1, len(lines)):
        if any(c.line == li for c in calcs):
            continue
        out[li] = _GSM_NUM.sub(lambda m: _gsm_format(old_to_new[_gsm_value(m.group())], m.group()) if _gsm_value(m.group()) in old_to_new else m.group(), out[li])
    return out


_WORD_OP = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}
_SYM_OP = {"+": "+", "-": "-", "*": "×", "/": "÷"}


def _prose_computation(expr: str, shown: str, result: str, rng) -> str:
    """How a model might write ``expr = result`` in prose (seeded): with symbols (``a × b = c``), in
    words (``a times b is c``, ``20% of 50 is 10``, ``half of 8 is 4``), or just the result."""
    e = expr.replace(" ", "")
    nums = re.findall(r"\d+(?:\.\d+)?", e)
    lits = re.findall(r"\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?", shown)
    if len(lits) == len(nums):
        nums = lits  # keep the text's own spelling (thousands separators)
    special = None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)/(2|3|4)", e)
    if m:
        special = f"{ {'2': 'half', '3': 'a third', '4': 'a quarter'}[m.group(2)]} of {nums[0]}"
    m = re.fullmatch(r"(\d+(?:\.\d+)?)/100\*(\d+(?:\.\d+)?)|(\d+(?:\.\d+)?)\*(\d+(?:\.\d+)?)/100", e)
    if m:
        p, b = (nums[0], nums[2]) if m.group(1) else (nums[1], nums[0])
        special = f"{p}% of {b}"
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\*0\.(\d\d?)", e)
    if m and special is None:
        pct = str(int(m.group(2).ljust(2, "0")))
        special = f"{pct}% of {nums[0]}"
    style = rng.choice(("symbols", "words", "bare"))
    if style == "bare":
        return result
    if special is not None and (style == "words" or rng.random() < 0.5):
        return f"{special} is {result}"
    ops = re.findall(r"(?<=[\d)])[-+*/]", e)
    if style == "words" and "(" not in e and len(ops) == len(nums) - 1:
        parts = [nums[0]]
        for op, x in zip(ops, nums[1:], strict=True):
            parts += [_WORD_OP[op], x]
        return " ".join(parts) + " is " + result
    out = shown
    for a, b in _SYM_OP.items():
        out = re.sub(rf"(?<=[\d)\s]){re.escape(a)}(?=[\s\d($])", b, out) if a in "*/" else out
    return f"{out.strip()} = {result}"


def _gsm_prose(lines: list[str], rng) -> list[str]:
    """Lines with each calculation's text rewritten by `_prose_computation` and annotations dropped."""
    from qmr.steps import CALCULATOR_ANNOTATION

    calcs = _gsm_calcs(lines) or []
    out = list(lines)
    for li in range(len(lines)):
        line = lines[li]
        edits = []
        for c in (c for c in calcs if c.line == li):
            vals = [_gsm_value(lit) for _, _, lit in c.operands]
            shown = _inline_span(line, c, vals)
            after = _GSM_NUM.match(line, c.end)
            if shown is None or after is None:
                continue
            head = line[: c.start]
            eq = re.search(r"=\s*(\$?)\s*$", head)
            if eq is None:
                continue
            start = shown[0][0]
            dollar = "$" if line[start - 1 : start] == "$" else ""
            if dollar:
                start -= 1
            expr_text = line[start : eq.start()]
            res = eq.group(1) + after.group()
            edits.append((start, after.end(), _prose_computation(c.expr, expr_text, res, rng)))
        for s, e, t in sorted(edits, reverse=True):
            if any(s < e2 and s2 < e for s2, e2, _ in edits if (s2, e2) != (s, e)):
                continue
            line = line[:s] + t + line[e:]
        out[li] = re.sub(r"\s{2,}", " ", CALCULATOR_ANNOTATION.sub("", line)).strip()
    return out


_ANSWER_FORMATS = ("The answer is {}.", "Therefore, the final answer is $\\boxed{{{}}}$.", "#### {}")


def processbench_from_gsm8k(
    records: list[dict[str, Any]],
    seed: int = 0,
    n: int | None = None,
    annotations: str = "strip",
    error_share: float = 0.5,
    kinds: tuple[str, ...] = GSM8K_ERROR_KINDS,
    id_prefix: str = "gsm8k",
) -> list[dict[str, Any]]:
    """First-error items from GSM8K's worked solutions (raw ``{question, answer}`` rows; socratic rows
    lose their ``sub-question ** `` prefixes), seeded.

    Records are taken in a seeded order, ``n`` at most. Steps are the solution's lines plus a closing
    answer step (one of three seeded formats); the calculator annotations ``<<a*b=c>>`` are kept or
    stripped (``annotations``). With probability ``error_share`` an item is erroneous: one calculation
    (seeded) gets one error of ``kinds`` — ``slip``: its written result is off (±1, ±2, ±10, swapped
    last digits); ``operand``: a number it takes from the problem is off (±1, ±2, +5), result
    correct for it; ``operator``: one operator swapped (+↔-, *↔/), result correct for it — and every
    later calculation that uses a changed value is recomputed from it, so that step is the first error
    (``label``) and the final answer changes. A record whose solution cannot be corrupted consistently
    (no annotations, an unparsable one, a negative value, an unchanged answer) gives a correct item.
    """
    import random

    if annotations not in GSM8K_ANNOTATIONS:
        raise ValueError(f"annotations: got {annotations!r}; allowed: {', '.join(GSM8K_ANNOTATIONS)}")
    from qmr.steps import CALCULATOR_ANNOTATION

    rng = random.Random(seed)
    order = list(range(len(records)))
    rng.shuffle(order)
    items: list[dict[str, Any]] = []
    for idx in order:
        if n is not None and len(items) >= n:
            break
        rec = records[idx]
        body, sep, answer = str(rec.get("answer", "")).rpartition("####")
        if not sep:
            continue
        lines = [re.sub(r"^[^*\n]*\?\s*\*\*\s*", "", ln).strip() for ln in body.strip().splitlines() if ln.strip()]
        gold = answer.strip().replace(",", "")
        fmt = rng.choice(_ANSWER_FORMATS)
        want_error = rng.random() < error_share
        calcs = _gsm_calcs(lines)
        steps, label, final = lines, -1, gold
        for _ in range(4 if want_error and calcs else 0):
            k = rng.randrange(len(calcs))
            kind = rng.choice(kinds)
            bad = _gsm_corrupt(lines, calcs, k, kind, rng)
            if bad is not None:
                new_calcs = _gsm_calcs(bad)
                gold_v = _gsm_value(gold) if re.fullmatch(r"-?\d+(?:\.\d+)?", gold) else None
                hit = [j for j, c in enumerate(calcs) if _gsm_value(c.result) == gold_v]
                if new_calcs and hit and len(new_calcs) == len(calcs):
                    new_final = _gsm_value(new_calcs[hit[-1]].result)
                    if new_final != gold_v:
                        steps, label, final = bad, calcs[k].line, _gsm_format(new_final)
                        break
        if annotations == "prose":
            steps = _gsm_prose(steps, rng)
        elif annotations == "strip":
            steps = [re.sub(r"\s{2,}", " ", CALCULATOR_ANNOTATION.sub("", s)).strip() for s in steps]
        steps = [*steps, fmt.format(final)]
        items.append(
            {
                "id": f"{id_prefix}-{idx:05d}-{'err' if label >= 0 else 'ok'}",
                "problem": rec["question"],
                "steps": steps,
                "final_answer_correct": label < 0,
                "label": label,
                "source": id_prefix,
                **({"error_kind": kind} if label >= 0 else {}),
            }
        )
    return validate_processbench(items, f"{id_prefix} items")
