"""Hand-made toy cases and judgments shared by the locate tests."""

from __future__ import annotations

from typing import Any

from qmr.locate.cases import Case

QUESTION = "Mia has {a} apples. Mia buys {k} bags with {m} apples in each bag. Mia gives {g} apples to a friend. How many apples does Mia have now?"


def toy_plan(a: int, k: int, m: int, g: int) -> list[dict[str, Any]]:
    km = k * m
    return [
        {"a": k, "op": "*", "b": m, "result": km},
        {"a": a, "op": "+", "b": km, "result": a + km},
        {"a": a + km, "op": "-", "b": g, "result": a + km - g},
    ]


def gold_steps(plan: list[dict[str, Any]]) -> list[str]:
    return [f"{s['a']} {s['op']} {s['b']} = {s['result']}" for s in plan] + [
        f"The answer is {plan[-1]['result']}."
    ]


def toy_case(
    qt_steps: list[str] | None = None,
    a: int = 23,
    k: int = 4,
    m: int = 12,
    g: int = 17,
    cid: str = "toy-0",
    variant: str = "w4",
) -> Case:
    plan = toy_plan(a, k, m, g)
    gold = gold_steps(plan)
    steps = gold if qt_steps is None else qt_steps
    pred = None
    if steps and steps[-1].startswith("The answer is"):
        pred = steps[-1].removeprefix("The answer is ").rstrip(".")
    return Case(
        id=cid,
        variant=variant,
        benchmark="toy",
        question=QUESTION.format(a=a, k=k, m=m, g=g),
        gold_answer=str(plan[-1]["result"]),
        gold_solution="\n".join(gold),
        plan=plan,
        fp_text="\n".join(gold),
        fp_steps=gold,
        fp_pred=str(plan[-1]["result"]),
        qt_text="\n".join(steps),
        qt_steps=steps,
        qt_pred=pred,
    )


def computational_case(i: int, variant: str = "w4") -> Case:
    """Case i: a computational error (+1) at step (i % 3) + 1, later steps computed from the wrong value."""
    a, k, m, g = 11 + i, 2 + i % 5, 3 + i % 7, 5 + i % 4
    plan = toy_plan(a, k, m, g)
    bad = i % 3
    values: list[int] = []
    steps: list[str] = []
    for j, s in enumerate(plan):
        x = s["a"]
        y = s["b"]
        if j == 1:
            y = values[0]
        if j == 2:
            x = values[1]
        exact = {"+": x + y, "-": x - y, "*": x * y}[s["op"]]
        r = exact + 1 if j == bad else exact
        values.append(r)
        steps.append(f"{x} {s['op']} {y} = {r}")
    steps.append(f"The answer is {values[-1]}.")
    return toy_case(steps, a=a, k=k, m=m, g=g, cid=f"toy-{i:03d}", variant=variant)


def judgment(
    judge: str,
    etype: str | None,
    step: int | None = None,
    *,
    valid: bool = True,
    abstain: bool = False,
    cid: str = "c1",
    confidence: float | None = 0.9,
) -> dict[str, Any]:
    return {
        "id": cid,
        "variant": "w4",
        "judge": judge,
        "kind": "llm",
        "model": judge,
        "prompt_version": "judge_v1",
        "input_hash": "h",
        "raw": None,
        "primary_error_type": etype,
        "error_step": step,
        "explanation": "",
        "confidence_score": confidence,
        "valid": valid,
        "abstain": abstain,
        "error": None,
        "error_kind": None,
        "tokens_in": 10,
        "tokens_out": 5,
        "cost": 0.0,
        "calls": 1,
        "retries": 0,
    }


def _wrong(solution: str) -> str:
    """The gold solution with the first step's result off by one, carried to the answer."""
    lines = solution.splitlines()
    lhs, result = lines[0].rsplit("=", 1)
    wrong = int(result) + 1
    lines[0] = f"{lhs}= {wrong}"
    return "\n".join(lines[:1] + [f"The answer is {wrong}."])


def write_judge_project(root, variant: str, per_benchmark: int = 4, benches: tuple[str, ...] = ("test", "mine")) -> None:
    """Benchmarks and traces for `qmr judge` / `qmr vote` in a scratch project: fp solves every toy
    problem, ``variant`` makes a computational error in the first step of each. A name of ``benches``
    other than a toy split gets test-split problems with ids prefixed by the name."""
    from qmr.generation.base import Completion
    from qmr.io import write_jsonl
    from qmr.toy.problems import generate_split
    from qmr.traces import make_traces

    for bench in benches:
        records = generate_split(bench if bench in ("train", "mine", "test") else "test", per_benchmark, seed=0)
        if bench not in ("train", "mine", "test"):
            records = [{**r, "id": f"{bench}-{r['id']}", "source": bench} for r in records]
        write_jsonl(root / "data" / "benchmarks" / f"{bench}.jsonl", records)
        prompts = [r["question"] for r in records]
        for name, texts in (("fp", [r["solution"] for r in records]), (variant, [_wrong(r["solution"]) for r in records])):
            comps = [[Completion(text=t, tokens=len(t.split()), seconds=0.01)] for t in texts]
            traces = make_traces(records, comps, variant=name, benchmark=bench, kind="math", prompts=prompts)
            write_jsonl(root / "data" / "traces" / "toy" / name / f"{bench}.jsonl", traces)
