"""Benchmarking judges on first-error localization (ProcessBench metrics).

ProcessBench format: a JSON list of ``{id, problem, steps: [str], final_answer_correct: bool, label:
int}`` with ``label`` the 0-based index of the first wrong step, or -1 when every step is right.
Optional extra keys used here: ``gold_answer``, ``gold_solution``, ``plan`` (attached by `attach_gold`
so the ``reference`` judge can work), ``pred``.

Gold solutions come from a benchmark file read by the project's loaders (`load_gold`: any format of
`qmr.benchmarks.FORMATS`, detected or given), so a raw GSM8K file (``answer`` = the worked solution
ending ``#### N``) and its normalized copy give the same gold answers and solutions.

Metrics per judge (and for the voting ensemble): accuracy on erroneous samples (predicted index ==
label), accuracy on correct samples (predicts "no error"), and F1 = their harmonic mean. A judge's
prediction is ``error_step - 1`` for an error type, -1 for ``no_error``; an abstention counts as -1
("found nothing") with ``abstain_as="no_error"`` (default) or as wrong with ``abstain_as="wrong"``; an
invalid reply and an escalated ensemble label are always wrong.

Beside the scores, so that abstentions cannot pass for "no error": per judge ``abstained`` (valid
judgments that cast no vote), ``invalid``, and ``escalated`` (ensemble escalations in which this judge
disagreed with the anchor; None without an ensemble); for the ensemble ``abstained`` (every judge
abstained) and ``escalated`` (the judges disagreed). A judge (or the ensemble) that abstains on every
item is named in ``warnings`` and logged.

The file format and the PRM800K converters live in `qmr.processbench`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from qmr.locate.cases import Case
from qmr.locate.judges import Judge, speaks
from qmr.locate.taxonomy import NO_ERROR
from qmr.locate.vote import MACHINE_ACCEPTED
from qmr.processbench import normalize_problem

log = logging.getLogger(__name__)

BENCH_VARIANT = "processbench"


def load_gold(path: str | Path, fmt: str = "auto") -> tuple[list[dict[str, Any]], str]:
    """Benchmark records from a gold file through the benchmark loaders (`qmr.benchmarks`), and the
    format read (``fmt``, or the detected one for ``auto``)."""
    from qmr.benchmarks import FORMATS, normalize_rows, read_rows
    from qmr.io import DataFileError

    if fmt != "auto":
        FORMATS.check(fmt, "--gold-format")
    rows = read_rows(Path(path))
    if not rows:
        raise DataFileError(f"{path}: no records")
    return normalize_rows(rows, fmt, "gold", str(path))


def attach_gold(items: list[dict[str, Any]], benchmark_records: list[dict[str, Any]]) -> int:
    """Add ``gold_answer``/``gold_solution``/``plan`` to items whose normalized problem text matches a
    benchmark record (``question`` or ``problem``); returns how many matched. Existing values are kept."""
    index: dict[str, dict[str, Any]] = {}
    for rec in benchmark_records:
        q = rec.get("question", rec.get("problem"))
        if isinstance(q, str):
            index.setdefault(normalize_problem(q), rec)
    matched = 0
    for it in items:
        rec = index.get(normalize_problem(it["problem"]))
        if rec is None:
            continue
        matched += 1
        if rec.get("answer") is not None:
            it.setdefault("gold_answer", str(rec["answer"]))
        if rec.get("solution"):
            it.setdefault("gold_solution", rec["solution"])
        if rec.get("plan"):
            it.setdefault("plan", rec["plan"])
    return matched


# --------------------------------------------------------------------------------------------------
# evaluation


def item_case(item: dict[str, Any], variant: str = BENCH_VARIANT) -> Case:
    return Case(
        id=str(item["id"]),
        variant=variant,
        benchmark=str(item.get("source", BENCH_VARIANT)),
        question=item["problem"],
        gold_answer=str(item.get("gold_answer") or ""),
        gold_solution=item.get("gold_solution"),
        plan=item.get("plan"),
        qt_text="\n\n".join(item["steps"]),
        qt_steps=list(item["steps"]),
        qt_pred=item.get("pred"),
        qt_correct=None,
    )


def prediction(j: dict[str, Any] | None, abstain_as: Literal["no_error", "wrong"] = "no_error") -> int | None:
    """0-based first-error index predicted by a judgment (-1: no error; None: no usable prediction)."""
    if j is None or not j.get("valid"):
        return None
    if j.get("abstain") or j.get("primary_error_type") is None:
        return -1 if abstain_as == "no_error" else None
    if j["primary_error_type"] == NO_ERROR:
        return -1
    step = j.get("error_step")
    return step - 1 if isinstance(step, int) else None


def processbench_scores(items: list[dict[str, Any]], preds: dict[str, int | None]) -> dict[str, Any]:
    err = [it for it in items if it["label"] >= 0]
    ok = [it for it in items if it["label"] < 0]
    err_hits = sum(preds.get(str(it["id"])) == it["label"] for it in err)
    ok_hits = sum(preds.get(str(it["id"])) == -1 for it in ok)
    a = err_hits / len(err) if err else 0.0
    b = ok_hits / len(ok) if ok else 0.0
    f1 = 2 * a * b / (a + b) if a + b > 0 else 0.0
    return {
        "n_error": len(err),
        "n_correct": len(ok),
        "error_accuracy": round(a, 4),
        "correct_accuracy": round(b, 4),
        "f1": round(f1, 4),
        "no_prediction": sum(preds.get(str(it["id"])) is None for it in items),
    }


def judge_bench(
    items: list[dict[str, Any]],
    judges: dict[str, Judge],
    ensemble: Any | None = None,
    cache_path: str | Path | None = None,
    abstain_as: Literal["no_error", "wrong"] = "no_error",
) -> dict[str, Any]:
    """ProcessBench scores per judge and, given a `VoteSpec`, for the voting ensemble.

    Returns ``{"judges": {name: scores}, "ensemble": scores | None, "calls": n, "calls_saved": n,
    "warnings": [str]}``.
    """
    from qmr.locate.cache import run_judges

    cases = [item_case(it) for it in items]
    run = run_judges(cases, judges, cache_path)
    by = {(j["id"], j["judge"]): j for j in run.judgments}
    out: dict[str, Any] = {
        "judges": {},
        "ensemble": None,
        "calls": run.calls_made,
        "calls_saved": run.calls_saved,
    }
    for name in judges:
        preds = {c.id: prediction(by.get((c.id, name)), abstain_as) for c in cases}
        js = [by.get((c.id, name)) for c in cases]
        out["judges"][name] = {
            **processbench_scores(items, preds),
            "abstained": sum(j is not None and bool(j.get("valid")) and not speaks(j) for j in js),
            "invalid": sum(j is not None and not j.get("valid") for j in js),
            "escalated": None,
            "rollouts": sum(int(j.get("rollouts") or 0) for j in js if j is not None),
        }
    if ensemble is not None:
        from qmr.locate.vote import vote_all

        labels = vote_all(run.judgments, ensemble, [c.id for c in cases], BENCH_VARIANT)
        for name, sc in out["judges"].items():
            sc["escalated"] = sum(
                lab["rule"] == "escalated" and lab.get("relations", {}).get(name) == "differs" for lab in labels
            )
        preds = {}
        for lab in labels:
            if lab["rule"] in MACHINE_ACCEPTED:
                t = lab["primary_error_type"]
                preds[lab["id"]] = (
                    -1 if t == NO_ERROR else (lab["error_step"] - 1 if lab["error_step"] else None)
                )
            elif lab["rule"] == "abstain_all" and abstain_as == "no_error":
                preds[lab["id"]] = -1  # every judge abstained: scored like an abstaining single judge
            else:
                preds[lab["id"]] = None
        out["ensemble"] = processbench_scores(items, preds)
        out["ensemble"]["abstained"] = sum(lab["rule"] == "abstain_all" for lab in labels)
        out["ensemble"]["invalid"] = 0
        out["ensemble"]["escalated"] = sum(lab["rule"] == "escalated" for lab in labels)
    out["warnings"] = abstention_warnings(out, len(items), judges)
    for w in out["warnings"]:
        log.warning("%s", w)
    return out


def abstention_warnings(scores: dict[str, Any], n_items: int, judges: dict[str, Judge] | None = None) -> list[str]:
    """One line per judge (and the ensemble) that abstained on every item: its scores measure nothing."""
    if not n_items:
        return []
    out = []
    rows = list(scores["judges"].items()) + ([("ensemble", scores["ensemble"])] if scores.get("ensemble") else [])
    for name, sc in rows:
        if sc.get("abstained") != n_items:
            continue
        why = ""
        if judges and name in judges and judges[name].kind == "reference":
            why = (
                " (the reference judge needs a gold solution per item: --gold FILE with a benchmark that has "
                "worked solutions, e.g. GSM8K's test.jsonl, matched by problem text)"
            )
        what = "every judge abstained on every item" if name == "ensemble" else f"judge {name} abstained on every item"
        out.append(f"{what} ({n_items}): its err_acc/ok_acc/F1 measure nothing{why}")
    return out


def judge_bench_from_params(
    params,
    file: str,
    names: list[str],
    gold_file: str | None = None,
    ensemble: bool = True,
    gold_format: str = "auto",
    model: str | None = None,
    prompt_style: str = "auto",
) -> dict[str, Any]:
    """`qmr judge-bench`: the configured judges ``names`` (all when empty; endpoints resolved) and, when
    every voting judge is among them, the vote ensemble, scored on a ProcessBench-format ``file``; gold
    solutions from ``gold_file`` read in ``gold_format`` (`load_gold`). ``model`` is the policy of the
    rollout judges (`bind_policy`)."""
    from qmr.errors import UserError
    from qmr.locate.judges import build_judge
    from qmr.paths import cache_dir
    from qmr.processbench import read_processbench

    specs = params.judge.judges
    chosen = names or list(specs)
    unknown = [n for n in chosen if n not in specs]
    if unknown:
        raise UserError(f"--judges: got {', '.join(unknown)}; allowed: {', '.join(specs)}")
    items = read_processbench(file)
    matched, fmt = 0, None
    if gold_file:
        records, fmt = load_gold(gold_file, gold_format)
        matched = attach_gold(items, records)
        log.info("gold: %s read as format %s (%d records); %d/%d items matched", gold_file, fmt, len(records), matched, len(items))
    judges = {n: build_judge(n, specs[n], params.endpoints) for n in chosen}
    rollouts = [n for n, j in judges.items() if getattr(j, "batched", False)]
    skipped = []
    if rollouts and not model:
        if names:
            raise UserError(f"--judges {','.join(rollouts)}: a rollout judge needs --model (a local model directory, or "
                            "MODEL/VARIANT of this workspace: models/quantized/MODEL/VARIANT) to roll out with")  # fmt: skip
        skipped, rollouts = rollouts, []
        judges = {n: j for n, j in judges.items() if n not in skipped}
        log.info("judge %s not scored: a rollout judge needs --model (the ensemble votes without it)", ", ".join(skipped))
    voters = {params.vote.baseline, *params.vote.auxiliaries}
    spec = params.vote if ensemble and voters <= set(judges) | set(skipped) else None
    close = bind_policy(params, {n: judges[n] for n in rollouts}, model, prompt_style) if rollouts else None
    try:
        scores = judge_bench(items, judges, ensemble=spec, cache_path=cache_dir() / "judge" / "judge-bench.jsonl")
    finally:
        if close is not None:
            close()
    if gold_file and not matched:
        w = f"--gold {gold_file}: no item's problem text matches a record (format {fmt}); no gold solution attached"
        log.warning("%s", w)
        scores["warnings"] = [w, *scores["warnings"]]
    return {**scores, "items": len(items), "gold_attached": matched, "gold_format": fmt}


def bind_policy(params, judges: dict[str, Any], model: str, prompt_style: str = "auto"):
    """Bind rollout ``judges`` to the policy ``model``: a local model directory, or ``MODEL/VARIANT`` of
    this workspace (models/quantized/MODEL/VARIANT, prompted in models.MODEL.prompt_style), through
    ``params.generate``'s backend. ``prompt_style`` ``auto``: the workspace model's style, else ``chat``
    when the tokenizer has a chat template, else ``plain``. Returns the backend's closer."""
    from pathlib import Path

    from qmr import paths
    from qmr.determinism import set_determinism
    from qmr.errors import UserError
    from qmr.generation import backend_from_config, close_backend
    from qmr.grading import grade
    from qmr.locate.rollout import policy_from_backend
    from qmr.prompts import build_prompt

    style = prompt_style
    if Path(model).is_dir():
        path = Path(model)
    else:
        name, _, variant = model.partition("/")
        path = paths.quantized_model(name, variant)
        if name not in params.models or variant not in params.quantize.variants or not path.is_dir():
            raise UserError(f"--model: got {model!r}; allowed: a local model directory, or MODEL/VARIANT of this workspace with "
                            f"models/quantized/MODEL/VARIANT built (models: {', '.join(params.models)}; variants: "
                            f"{', '.join(params.quantize.variants)})")  # fmt: skip
        if style == "auto":
            style = params.models[name].prompt_style
    set_determinism(params.seed, params.threads)
    backend = backend_from_config(params.generate, str(path))
    tokenizer = getattr(backend, "tokenizer", None)
    if style == "auto":
        style = "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    for judge in judges.values():
        spec = params.judge.judges[judge.name]
        policy = policy_from_backend(backend.generate, temperature=spec.rollout_temperature,
                                     max_new_tokens=params.generate.max_new_tokens, seed=params.seed, progress=True)  # fmt: skip
        judge.bind(policy, prompt_of=lambda c: build_prompt(c.question, style, tokenizer),
                   grade=lambda text, c: grade(text, c.gold_answer, "math")[1], policy_name=str(model))  # fmt: skip
    return lambda: close_backend(backend)


def format_scores(scores: dict[str, Any]) -> list[str]:
    """ProcessBench's table: per judge (and the ensemble) error / correct accuracy, their F1, and the
    abstentions, invalid replies and escalations (the warnings are logged, see `abstention_warnings`)."""
    rows = list(scores["judges"].items()) + ([("ensemble", scores["ensemble"])] if scores.get("ensemble") else [])
    lines = [
        f"{'judge':16s} {'n_err':>6s} {'n_ok':>6s} {'err_acc':>8s} {'ok_acc':>8s} {'F1':>7s} "
        f"{'abstain':>7s} {'invalid':>7s} {'escal':>6s}"
    ]

    def n(x: int | None) -> str:
        return "-" if x is None else str(x)

    for name, sc in rows:
        lines.append(
            f"{name:16s} {sc['n_error']:6d} {sc['n_correct']:6d} {sc['error_accuracy']:8.3f} {sc['correct_accuracy']:8.3f} "
            f"{sc['f1']:7.3f} {n(sc.get('abstained')):>7s} {n(sc.get('invalid')):>7s} {n(sc.get('escalated')):>6s}"
        )
    return lines
