"""A deterministic generator of GSM8K-style arithmetic word problems with exact gold steps.

A problem is built compositionally: a starting quantity, then one to four sentences that each apply
one operation to the running total (``+ - * /``, exact integers, every value positive and bounded by
`ToyDataConfig`), some sentences needing two steps ("buys 4 bags with 12 marbles in each bag" gives
``4 * 12 = 48`` then ``23 + 48 = 71``), then a question. The gold solution is step-formatted — one
``a op b = c`` line per step, then ``The answer is N.`` — and ``plan`` holds the same steps as data, so
the first faulty step of any model trace can be located exactly.

Splits (``train``, ``mine``, ``test``) are disjoint by construction: a question belongs to the split
its SHA-256 bucket names (`split_of`), and a generator for one split rejects every other question.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from qmr.config import Problem, field
from qmr.prompts import ANSWER_SENTENCE, PLAIN_TEMPLATE

SPLITS = ("train", "mine", "test")
OPS = ("+", "-", "*", "/")
SOURCE = "toy"


@dataclass
class ToyDataConfig:
    """Number ranges and split fractions of the toy word problems."""

    min_steps: int = field(1, help="fewest arithmetic steps in a problem")
    max_steps: int = field(4, help="most arithmetic steps in a problem")
    max_start: int = field(60, help="largest starting quantity (smallest is 2)")
    max_operand: int = field(60, help="largest number added or subtracted in one sentence")
    max_factor: int = field(9, help="largest multiplier, divisor and group count (smallest is 2)")
    max_group: int = field(12, help="largest group size in two-step sentences ('k bags of m')")
    max_value: int = field(500, help="largest value any step may produce (all values stay >= 1)")
    train_fraction: float = field(0.9, help="share of question-hash buckets assigned to 'train'")
    mine_fraction: float = field(0.05, help="share assigned to 'mine' (the rest is 'test')")

    def check(self, key: str = "") -> list[Problem]:
        p = f"{key}." if key else ""
        out: list[Problem] = []
        if not 1 <= self.min_steps <= self.max_steps:
            out.append(Problem(f"{p}min_steps", self.min_steps, f"1 <= min_steps <= max_steps ({self.max_steps})"))
        for name in ("max_start", "max_operand", "max_group"):
            if getattr(self, name) < 2:
                out.append(Problem(f"{p}{name}", getattr(self, name), "an integer >= 2"))
        if self.max_factor < 2:
            out.append(Problem(f"{p}max_factor", self.max_factor, "an integer >= 2"))
        if self.max_value < max(self.max_start, 4):
            out.append(Problem(f"{p}max_value", self.max_value, f">= max_start ({self.max_start}) and >= 4"))
        if not 0 < self.train_fraction < 1:
            out.append(Problem(f"{p}train_fraction", self.train_fraction, "a number in (0, 1)"))
        if not 0 < self.mine_fraction < 1 - self.train_fraction:
            out.append(
                Problem(f"{p}mine_fraction", self.mine_fraction, f"a number in (0, 1 - train_fraction = {1 - self.train_fraction:g})")
            )
        return out


DEFAULT_DATA = ToyDataConfig()

# --------------------------------------------------------------------------------------------------
# Word lists and templates. Placeholders: {name} {obj} {a} start value, {b} operand or factor,
# {k} group count, {m} group size. Two-step templates write their first step in the order {k} and
# {m} appear in the sentence.

NAMES = ("Mia", "Leo", "Ava", "Sam", "Zoe", "Max", "Ivy", "Ben", "Lily", "Noah", "Emma", "Omar")

FAMILY_SPECS: dict[str, dict[str, Any]] = {
    "shopping": {
        "objects": ("apples", "pens", "stickers", "marbles"),
        "start": ("{name} has {a} {obj}.", "{name} owns {a} {obj}."),
        "+": ("{name} buys {b} more {obj}.", "A friend gives {name} {b} {obj}."),
        "-": ("{name} gives {b} {obj} to a friend.", "{name} sells {b} {obj}."),
        "*": ("Then {name} has {b} times as many {obj} as before.",),
        "/": ("{name} splits the {obj} into {b} equal groups and keeps one group.",),
        "k*m+": ("{name} buys {k} bags with {m} {obj} in each bag.", "{name} buys {k} boxes of {m} {obj}."),
        "k*m-": ("{name} sells {k} bags with {m} {obj} in each bag.", "{name} gives away {k} boxes of {m} {obj}."),
        "question": ("How many {obj} does {name} have now?",),
    },
    "baking": {
        "objects": ("cookies", "muffins", "cupcakes", "rolls"),
        "start": ("{name} bakes {a} {obj}.", "{name} has {a} {obj}."),
        "+": ("{name} bakes {b} more {obj}.", "A friend brings {name} {b} {obj}."),
        "-": ("{name} eats {b} of the {obj}.", "{name} sells {b} {obj}."),
        "*": ("Then {name} has {b} times as many {obj} as before.",),
        "/": ("{name} puts the {obj} on {b} equal trays and keeps one tray.",),
        "k*m+": ("{name} bakes {k} trays with {m} {obj} on each tray.", "{name} bakes {m} {obj} each day for {k} days."),
        "k*m-": ("{name} sells {k} boxes with {m} {obj} in each box.", "{name} sells {k} trays of {m} {obj}."),
        "question": ("How many {obj} does {name} have now?",),
    },
    "travel": {
        "objects": ("people",),
        "start": ("A bus driven by {name} has {a} people on it.", "{name} drives a bus with {a} people on it."),
        "+": ("At the next stop {b} people get on.", "Then {b} more people get on the bus."),
        "-": ("At the next stop {b} people get off.", "Then {b} people get off the bus."),
        "*": ("Then there are {b} times as many people on the bus as before.",),
        "/": ("The people split into {b} equal groups and only one group stays on the bus.",),
        "k*m+": ("At the next stop {k} groups of {m} people get on.", "Then {k} families with {m} people each get on."),
        "k*m-": ("At the next stop {k} groups of {m} people get off.", "Then {k} families with {m} people each get off."),
        "question": ("How many people are on the bus now?",),
    },
    "savings": {
        "objects": ("coins", "dollars"),
        "start": ("{name} has {a} {obj} in a jar.", "{name} saves {a} {obj}."),
        "+": ("{name} saves {b} more {obj}.", "{name} earns {b} {obj}."),
        "-": ("{name} spends {b} {obj} on a book.", "{name} spends {b} {obj}."),
        "*": ("Then {name} has {b} times as many {obj} as before.",),
        "/": ("{name} splits the {obj} into {b} equal parts and keeps one part.",),
        "k*m+": ("{name} saves {m} {obj} each day for {k} days.", "{name} earns {m} {obj} each week for {k} weeks."),
        "k*m-": ("{name} spends {m} {obj} each day for {k} days.", "{name} buys {k} books for {m} {obj} each."),
        "question": ("How many {obj} does {name} have now?",),
    },
    "garden": {
        "objects": ("flowers", "trees", "plants"),
        "start": ("{name} has {a} {obj} in the garden.", "{name} grows {a} {obj}."),
        "+": ("{name} plants {b} more {obj}.", "A friend gives {name} {b} {obj}."),
        "-": ("Rabbits eat {b} of the {obj}.", "{name} gives {b} {obj} to a friend."),
        "*": ("Then {name} has {b} times as many {obj} as before.",),
        "/": ("{name} splits the {obj} into {b} equal groups and keeps one group.",),
        "k*m+": ("{name} plants {k} rows with {m} {obj} in each row.", "{name} plants {m} {obj} each day for {k} days."),
        "k*m-": ("{name} gives away {k} rows with {m} {obj} in each row.", "Rabbits eat {m} {obj} each day for {k} days."),
        "question": ("How many {obj} does {name} have now?",),
    },
}
FAMILIES: tuple[str, ...] = tuple(FAMILY_SPECS)

# Free-form prose rendering of the same steps (for the format-alignment stage).
FREEFORM_OPENERS = ("First,", "To start,")
FREEFORM_CONNECTORS = ("Then", "Next,", "After that,")
FREEFORM_STEP = {
    "+": ("{a} plus {b} is {c}.", "adding {b} to {a} gives {c}."),
    "-": ("{a} minus {b} is {c}.", "taking {b} away from {a} leaves {c}."),
    "*": ("{a} times {b} is {c}.", "{a} groups of {b} make {c}."),
    "/": ("{a} divided by {b} is {c}.", "{a} split into {b} equal parts gives {c}."),
}
FREEFORM_CLOSING = "So the final result is {answer}."

def vocabulary_texts() -> list[str]:
    """Texts that show every word of the generator in every context it can take.

    Each template is rendered with every name and object (numbers as ``7``), alone and after a
    space (as a later sentence), plus the prompt, the step lines, the answer sentence and every
    free-form phrase. The tokenizer's vocabulary is exactly the pieces these texts split into.
    """
    nums = {"a": 7, "b": 7, "c": 7, "k": 7, "m": 7, "answer": 7}
    sentences: list[str] = []
    for spec in FAMILY_SPECS.values():
        for key, templates in spec.items():
            if key == "objects":
                continue
            for template in templates:
                for name in NAMES:
                    for obj in spec["objects"]:
                        sentences.append(template.format(name=name, obj=obj, **nums))
    for lead in (*FREEFORM_OPENERS, *FREEFORM_CONNECTORS):
        for variants in FREEFORM_STEP.values():
            sentences += [f"{lead} {t.format(**nums)}" for t in variants]
    sentences.append(FREEFORM_CLOSING.format(**nums))
    texts = sorted(set(sentences)) + [" " + t for t in sorted(set(sentences))]
    first = FAMILY_SPECS[FAMILIES[0]]["start"][0].format(name=NAMES[0], obj="apples", **nums)
    lines = [f"7 {op} 7 = 7" for op in OPS] + [ANSWER_SENTENCE.format(**nums)]
    texts.append(PLAIN_TEMPLATE.format(question=first) + "\n".join(lines))
    for op in OPS:
        d = drill(_step(7, op, 7))
        texts += [PLAIN_TEMPLATE.format(question=d["question"]) + d["solution"], d["solution_freeform"]]
    return texts


def drill(step: dict[str, Any]) -> dict[str, Any]:
    """An arithmetic drill from one plan step: the bare expression as the question, the step line and
    the answer sentence as the solution. Training mixes these in (`ToyModelConfig.drill_fraction`) so
    the tiny model sees many more arithmetic examples per token; they are never evaluated on."""
    line = step_line(step)
    return {
        "question": line.split(" = ")[0],
        "answer": str(step["result"]),
        "solution": f"{line}\n" + ANSWER_SENTENCE.format(answer=step["result"]),
        "solution_freeform": render_freeform(line.split(" = ")[0], [step]),
        "plan": [step],
        "drill": True,
    }


# --------------------------------------------------------------------------------------------------
# Splits


def _bucket(question: str) -> float:
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(question: str, cfg: ToyDataConfig = DEFAULT_DATA) -> str:
    """The split a question belongs to, from a stable hash of its text."""
    u = _bucket(question)
    if u < cfg.train_fraction:
        return "train"
    if u < cfg.train_fraction + cfg.mine_fraction:
        return "mine"
    return "test"


def check_disjoint(splits: dict[str, list[dict]]) -> None:
    """Raise ValueError naming the ids of any question that occurs in more than one split."""
    seen: dict[str, tuple[str, str]] = {}
    clashes: list[str] = []
    for name, records in splits.items():
        for rec in records:
            q = rec["question"]
            if q in seen and seen[q][0] != name:
                clashes.append(f"{seen[q][0]}:{seen[q][1]} = {name}:{rec['id']}")
            else:
                seen.setdefault(q, (name, rec["id"]))
    if clashes:
        shown = "; ".join(clashes[:20]) + (f"; … ({len(clashes)} in all)" if len(clashes) > 20 else "")
        raise ValueError(f"splits overlap on {len(clashes)} question(s): {shown}")


# --------------------------------------------------------------------------------------------------
# Generation


def _step(a: int, op: str, b: int) -> dict[str, Any]:
    result = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
    return {"a": a, "op": op, "b": b, "result": result}


def step_line(step: dict[str, Any]) -> str:
    return f"{step['a']} {step['op']} {step['b']} = {step['result']}"


def _choose_sentence(rng: random.Random, value: int, steps_left: int, cfg: ToyDataConfig) -> tuple[str, dict, list[dict]] | None:
    """Pick one valid operation sentence for the running ``value``: (kind, numbers, steps)."""
    kinds: list[str] = []
    if value + 2 <= cfg.max_value:
        kinds.append("+")
    if value >= 3:
        kinds.append("-")
    if value * 2 <= cfg.max_value:
        kinds.append("*")
    divisors = [d for d in range(2, cfg.max_factor + 1) if value % d == 0 and value // d >= 1]
    if divisors:
        kinds.append("/")
    if steps_left >= 2:
        if value + 4 <= cfg.max_value:
            kinds.append("k*m+")
        if value >= 5:
            kinds.append("k*m-")
    if not kinds:
        return None
    kind = rng.choice(kinds)
    if kind == "+":
        b = rng.randint(2, min(cfg.max_operand, cfg.max_value - value))
        return kind, {"b": b}, [_step(value, "+", b)]
    if kind == "-":
        b = rng.randint(2, min(cfg.max_operand, value - 1))
        return kind, {"b": b}, [_step(value, "-", b)]
    if kind == "*":
        b = rng.randint(2, min(cfg.max_factor, cfg.max_value // value))
        return kind, {"b": b}, [_step(value, "*", b)]
    if kind == "/":
        b = rng.choice(divisors)
        return kind, {"b": b}, [_step(value, "/", b)]
    # two-step group sentences: k * m = p, then value +/- p
    room = cfg.max_value - value if kind == "k*m+" else value - 1
    pairs = [(k, m) for k in range(2, cfg.max_factor + 1) for m in range(2, cfg.max_group + 1) if k * m <= room]
    if not pairs:
        return None
    k, m = rng.choice(pairs)
    return kind, {"k": k, "m": m}, []  # steps filled by the caller (order depends on the template)


def _fill(template: str, **kw: Any) -> str:
    return template.format(**kw)


def make_problem(rng: random.Random, cfg: ToyDataConfig = DEFAULT_DATA, families: list[str] | None = None) -> dict:
    """One problem (no id, no split) drawn from ``rng``; retries internally until valid."""
    fams = list(families) if families else list(FAMILIES)
    unknown = [f for f in fams if f not in FAMILY_SPECS]
    if unknown:
        raise ValueError(f"unknown toy families {unknown}; allowed: {', '.join(FAMILIES)}")
    while True:
        family = rng.choice(fams)
        spec = FAMILY_SPECS[family]
        name = rng.choice(NAMES)
        obj = rng.choice(spec["objects"])
        n_target = rng.randint(cfg.min_steps, cfg.max_steps)
        value = rng.randint(2, cfg.max_start)
        sentences = [_fill(rng.choice(spec["start"]), name=name, obj=obj, a=value)]
        plan: list[dict] = []
        ok = True
        while len(plan) < n_target:
            choice = _choose_sentence(rng, value, n_target - len(plan), cfg)
            if choice is None:
                ok = False
                break
            kind, nums, steps = choice
            template = rng.choice(spec[kind])
            if kind.startswith("k*m"):
                k, m = nums["k"], nums["m"]
                first = (k, m) if template.index("{k}") < template.index("{m}") else (m, k)
                group = _step(first[0], "*", first[1])
                steps = [group, _step(value, kind[-1], group["result"])]
            sentences.append(_fill(template, name=name, obj=obj, **nums))
            plan.extend(steps)
            value = plan[-1]["result"]
        if not ok or len(plan) != n_target:
            continue
        sentences.append(_fill(rng.choice(spec["question"]), name=name, obj=obj))
        question = " ".join(sentences)
        answer = str(value)
        steps_text = [step_line(s) for s in plan]
        return {
            "source": SOURCE,
            "question": question,
            "answer": answer,
            "solution": "\n".join([*steps_text, ANSWER_SENTENCE.format(answer=answer)]),
            "steps": steps_text,
            "plan": plan,
            "family": family,
            "n_steps": len(plan),
            "solution_freeform": render_freeform(question, plan),
        }


def render_freeform(question: str, plan: list[dict]) -> str:
    """The same steps as prose ("First, 4 times 12 is 48. Then ..."); wording seeded by the question."""
    rng = random.Random("freeform:" + hashlib.sha256(question.encode("utf-8")).hexdigest())
    parts: list[str] = []
    for i, s in enumerate(plan):
        lead = rng.choice(FREEFORM_OPENERS) if i == 0 else rng.choice(FREEFORM_CONNECTORS)
        body = rng.choice(FREEFORM_STEP[s["op"]]).format(a=s["a"], b=s["b"], c=s["result"])
        parts.append(f"{lead} {body}")
    parts.append(FREEFORM_CLOSING.format(answer=plan[-1]["result"]))
    return " ".join(parts)


def _rng(split: str, seed: int, families: list[str] | None) -> random.Random:
    fam = ",".join(families) if families else "*"
    return random.Random(f"qmr-toy:{split}:{seed}:{fam}")


def problem_id(split: str, question: str) -> str:
    """A stable id from the question text: the same problem has the same id in every benchmark
    (e.g. `test` and a family-filtered `control` view of the test split)."""
    return f"toy-{split}-{hashlib.sha256(question.encode('utf-8')).hexdigest()[:12]}"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: got {split!r}; allowed: {', '.join(SPLITS)}")


def iter_problems(
    split: str, seed: int, families: list[str] | None = None, cfg: ToyDataConfig = DEFAULT_DATA
) -> Iterator[dict]:
    """An endless stream of ``split`` problems (repeats possible), ids ``toy-<split>-<n>`` in order."""
    _check_split(split)
    rng = _rng(split, seed, families)
    n = 0
    while True:
        rec = make_problem(rng, cfg, families)
        if split_of(rec["question"], cfg) != split:
            continue
        yield {"id": problem_id(split, rec["question"]), "split": split, **rec}
        n += 1


def generate_split(
    split: str, size: int, seed: int, families: list[str] | None = None, cfg: ToyDataConfig = DEFAULT_DATA
) -> list[dict]:
    """``size`` distinct problems of ``split``; the same arguments always give the same records."""
    _check_split(split)
    rng = _rng(split, seed, families)
    seen: set[str] = set()
    out: list[dict] = []
    attempts = 0
    limit = max(1000, 200 * size)
    while len(out) < size:
        attempts += 1
        if attempts > limit:
            raise ValueError(
                f"could only make {len(out)} distinct {split!r} problems of {size} requested; "
                "widen the number ranges or ask for fewer"
            )
        rec = make_problem(rng, cfg, families)
        q = rec["question"]
        if q in seen or split_of(q, cfg) != split:
            continue
        seen.add(q)
        out.append({"id": problem_id(split, rec["question"]), "split": split, **rec})
    return out


def verify_record(rec: dict) -> list[str]:
    """Every inconsistency between a record's plan, steps, solution and answer (empty when exact)."""
    errors: list[str] = []
    plan = rec["plan"]
    known = {int(x) for x in re.findall(r"\d+", rec["question"])}
    for i, s in enumerate(plan, start=1):
        a, op, b, r = s["a"], s["op"], s["b"], s["result"]
        if op not in OPS:
            errors.append(f"step {i}: unknown op {op!r}")
            continue
        if op == "/" and (b == 0 or a % b):
            errors.append(f"step {i}: {a} / {b} is not exact")
        exact = _step(a, op, b)["result"]
        if exact != r:
            errors.append(f"step {i}: {a} {op} {b} = {exact}, plan says {r}")
        if min(a, b, r) < 1:
            errors.append(f"step {i}: non-positive value in {a} {op} {b} = {r}")
        for x in (a, b):
            if x not in known:
                errors.append(f"step {i}: {x} is neither in the question nor an earlier result")
        known.add(r)
    if rec["steps"] != [step_line(s) for s in plan]:
        errors.append("steps differ from plan")
    if plan and rec["answer"] != str(plan[-1]["result"]):
        errors.append(f"answer {rec['answer']} differs from the last step {plan[-1]['result']}")
    expected = "\n".join([*rec["steps"], ANSWER_SENTENCE.format(answer=rec["answer"])])
    if rec["solution"] != expected:
        errors.append("solution text differs from steps + answer sentence")
    if rec["n_steps"] != len(plan):
        errors.append("n_steps differs from the plan length")
    return errors
