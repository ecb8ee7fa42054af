"""The ProcessBench file format and converters into it (no judging here: see `qmr.locate.judge_bench`).

ProcessBench format: a JSON list of ``{id, problem, steps: [str], final_answer_correct: bool, label:
int}`` with ``label`` the 0-based index of the first wrong step, or -1 when every step is right.

Converter from ProcessBench's published files (`read_published`, `processbench_from_published`): the
four splits ``gsm8k``, ``math``, ``olympiadbench``, ``omnimath`` of the hub dataset ``Qwen/ProcessBench``
(``<split>.json``; the hub's parquet conversion and JSON-lines copies read the same), rows ``{id,
generator, problem, steps: [str], final_answer_correct, label}`` — already this format, so the
converter checks it, turns array-valued ``steps`` (parquet) into lists and records the split as
``source``; the TRL "stepwise supervision" copies (``prompt``, ``completions``, ``labels: [bool]``) are
mapped onto it (``label`` = the first false step, or -1).

Converters from PRM800K (see ../shared/data/prm800k/SOURCE.md): raw label records
(`read_prm800k_raw`, `processbench_from_prm800k_raw`) and the flattened "stepwise-critic" parquet rows
(`processbench_from_stepwise_critic`). The trajectory is the chosen path; its first step rated -1
gives the label. `qmr.benchmarks` reads PRM800K worked solutions through the same converter.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from qmr.io import DataFileError, read_json, write_json

# --------------------------------------------------------------------------------------------------
# file format


def validate_processbench(items: Any, source: str = "<items>") -> list[dict[str, Any]]:
    """Check the ProcessBench schema; raise DataFileError naming the item, the field and what is allowed."""
    if not isinstance(items, list):
        raise DataFileError(f"{source}: expected a JSON list of items, got {type(items).__name__}")
    problems: list[str] = []
    seen: set[str] = set()
    for i, it in enumerate(items):
        where = f"{source}: item {i}"
        if not isinstance(it, dict):
            problems.append(f"{where}: expected an object")
            continue
        where = f"{source}: item {i} (id {it.get('id')!r})"
        if not isinstance(it.get("id"), (str, int)):
            problems.append(f"{where}: id: got {it.get('id')!r}; allowed: a string")
        elif str(it["id"]) in seen:
            problems.append(f"{where}: id: duplicate")
        else:
            seen.add(str(it["id"]))
        if not isinstance(it.get("problem"), str):
            problems.append(f"{where}: problem: got {it.get('problem')!r}; allowed: a string")
        steps = it.get("steps")
        if not (isinstance(steps, list) and steps and all(isinstance(s, str) for s in steps)):
            problems.append(f"{where}: steps: got {steps!r:.80}; allowed: a non-empty list of strings")
            continue
        label = it.get("label")
        if not (isinstance(label, int) and not isinstance(label, bool) and -1 <= label < len(steps)):
            problems.append(
                f"{where}: label: got {label!r}; allowed: -1 or an integer in 0..{len(steps) - 1}"
            )
        if not isinstance(it.get("final_answer_correct"), bool):
            problems.append(
                f"{where}: final_answer_correct: got {it.get('final_answer_correct')!r}; allowed: true or false"
            )
    if problems:
        raise DataFileError(
            "\n".join(problems[:50]) + (f"\n… {len(problems)} problems in all" if len(problems) > 50 else "")
        )
    return items


def read_processbench(path: str | Path) -> list[dict[str, Any]]:
    return validate_processbench(read_json(path), str(path))


def write_processbench(path: str | Path, items: list[dict[str, Any]]) -> None:
    write_json(path, validate_processbench(items, str(path)))


# --------------------------------------------------------------------------------------------------
# ProcessBench's published files

PROCESSBENCH_SPLITS = ("gsm8k", "math", "olympiadbench", "omnimath")


def read_published(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a published ProcessBench file: a JSON list (``<split>.json``), JSON lines, or parquet."""
    from qmr.benchmarks import read_rows
    from qmr.io import read_jsonl

    path = Path(path)
    try:
        return read_rows(path)
    except DataFileError:
        if path.suffix.lower() != ".json":
            raise
        return read_jsonl(path)  # JSON lines under a .json name (the hub's loader accepts both)


def processbench_from_published(rows: list[dict[str, Any]], split: str | None = None, source: str = "<rows>") -> list[dict[str, Any]]:
    """Items from ProcessBench's published rows (or the TRL stepwise-supervision layout), validated.

    ``split`` names the subset (``source`` of each item; default: the id's prefix, e.g. ``gsm8k-0``);
    an item without an id gets ``<split>-<index>``."""
    items: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataFileError(f"{source}: row {i}: expected an object, got {type(row).__name__}")
        steps = row.get("steps", row.get("completions"))
        if steps is not None and not isinstance(steps, (str, list)) and hasattr(steps, "tolist"):
            steps = steps.tolist()  # parquet: a numpy array
        label = row.get("label")
        if label is None and row.get("labels") is not None:
            flags = list(row["labels"].tolist() if hasattr(row["labels"], "tolist") else row["labels"])
            label = next((k for k, ok in enumerate(flags) if not ok), -1)
        if hasattr(label, "item"):
            label = label.item()  # numpy integer
        correct = row.get("final_answer_correct")
        if hasattr(correct, "item"):
            correct = correct.item()
        if correct is None and isinstance(label, int):
            correct = label == -1  # TRL copies without the flag: a correct process
        rid = row.get("id")
        name = split or (str(rid).rsplit("-", 1)[0] if isinstance(rid, str) and "-" in rid else None) or "processbench"
        item = {
            "id": str(rid) if rid is not None else f"{name}-{i}",
            "problem": row.get("problem", row.get("prompt")),
            "steps": list(steps) if isinstance(steps, list) else steps,
            "final_answer_correct": correct,
            "label": label,
            "source": name,
        }
        if row.get("generator") is not None:
            item["generator"] = row["generator"]
        items.append(item)
    return validate_processbench(items, source)


# --------------------------------------------------------------------------------------------------
# PRM800K converters


def read_prm800k_raw(path: str | Path) -> list[dict[str, Any]]:
    """PRM800K label records from a .jsonl file — one object per line, or pretty-printed objects
    concatenated (the shared examples)."""
    text = Path(path).read_text(encoding="utf-8")
    dec = json.JSONDecoder()
    out: list[dict[str, Any]] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        try:
            obj, i = dec.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise DataFileError(f"{path}: not valid JSON at offset {i} ({exc.msg})") from None
        out.append(obj)


def _final_answer(text: str) -> str | None:
    m = re.search(r"#\s*Answer\s*\n+\s*(.+?)\s*$", text, re.S)
    return m.group(1).strip() if m else None


def _same_answer(pred: str | None, gold: str | None) -> bool:
    if pred is None or gold is None:
        return False
    norm = lambda s: re.sub(r"\s+|\$|\\!|\\,", "", s).rstrip(".")  # noqa: E731
    if norm(pred) == norm(gold):
        return True
    try:
        from qmr.grading import is_equivalent

        return bool(is_equivalent(pred, gold, "math"))
    except Exception:  # grading unavailable or math-verify failure: plain comparison only
        return False


def processbench_from_prm800k_raw(
    records: list[dict[str, Any]], id_prefix: str = "prm800k"
) -> list[dict[str, Any]]:
    """One item per record: the chosen trajectory up to and including its first -1 step.

    At the step where labelling stopped (no chosen and no human completion) the first -1 completion
    is taken (phase 2: the pre-generated step), else the first completion. Records that end without a
    -1 step are kept as correct samples only when their final answer matches the ground truth; the rest
    (give-ups, wrong answers without a located step) are skipped.
    """
    items: list[dict[str, Any]] = []
    for n, rec in enumerate(records):
        q = rec.get("question", {})
        steps_out: list[str] = []
        label = -1
        for k, step in enumerate(rec.get("label", {}).get("steps", [])):
            comps = step.get("completions") or []
            chosen = step.get("chosen_completion")
            if chosen is not None and 0 <= chosen < len(comps):
                text, rating = comps[chosen]["text"], comps[chosen].get("rating")
            elif step.get("human_completion"):
                text, rating = step["human_completion"]["text"], 1
            elif comps:
                bad = next((c for c in comps if c.get("rating") == -1), None)
                pick = bad if bad is not None else comps[0]
                text, rating = pick["text"], pick.get("rating")
            else:
                break
            steps_out.append(text)
            if rating == -1:
                label = k
                break
        if not steps_out:
            continue
        gold = q.get("ground_truth_answer")
        if label == -1:
            if not _same_answer(_final_answer(steps_out[-1]), gold):
                continue
            correct = True
        else:
            correct = False
        items.append(
            {
                "id": f"{id_prefix}-{n:05d}",
                "problem": q.get("problem", ""),
                "steps": steps_out,
                "final_answer_correct": correct,
                "label": label,
                "gold_answer": gold,
                **({"gold_solution": q["ground_truth_solution"]} if q.get("ground_truth_solution") else {}),
            }
        )
    return items


def processbench_from_stepwise_critic(
    rows: Any, id_prefix: str = "prm800k", alternatives: bool = False
) -> list[dict[str, Any]]:
    """Items from the Birchlabs "stepwise-critic" rows (a pandas DataFrame or a list of dicts).

    Per problem the chosen path is the longest prefix of preferred steps. The erroneous item is that
    path up to its first -1 step; phase-1 labelers rarely continue a -1 step, so when the path has none
    it is the path up to the first position where a proposed completion was rated -1, plus that
    completion (label = that position). The correct item is the whole path plus a final completion
    rated 1 that reaches the right answer (``is_solution``). ``alternatives=True`` adds one item per
    further position with a -1 alternative. A null rating counts as 1 on labeler-written steps and as
    unknown otherwise.
    """
    if hasattr(rows, "to_dict"):
        rows = rows.to_dict("records")

    def s(x: Any) -> str | None:
        return x if isinstance(x, str) else None

    def step_text(r: dict[str, Any]) -> str:
        ans = s(r.get("answer"))
        return r["next_response"] + (f"\n\n# Answer\n\n{ans}" if ans is not None else "")

    def rating(r: dict[str, Any]) -> float | None:
        x = r.get("rating")
        if x is None or x != x:  # null: a labeler-written step counts as good, an unrated one as unknown
            return 1.0 if bool(r.get("is_human_response")) else None
        return float(x)

    problems: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        problems.setdefault(r["instruction"], []).append(r)
    items: list[dict[str, Any]] = []
    for pi, (problem, prows) in enumerate(problems.items()):
        prefixes = [
            [str(x) for x in (r.get("responses") if r.get("responses") is not None else [])] for r in prows
        ]
        path = max(prefixes, key=len)
        # rows proposed along the chosen path, by position
        by_pos: dict[int, list[dict[str, Any]]] = {}
        for r, pre in zip(prows, prefixes, strict=True):
            if pre == path[: len(pre)]:
                by_pos.setdefault(len(pre), []).append(r)
        base = f"{id_prefix}-{pi:04d}"
        chosen_bad = None
        for k in range(len(path)):
            on_path = next(
                (r for r in by_pos.get(k, []) if r["next_response"] == path[k] or step_text(r) == path[k]),
                None,
            )
            if on_path is not None and rating(on_path) == -1:
                chosen_bad = k
                break
        if chosen_bad is not None:
            items.append(_item(f"{base}-err", problem, path[: chosen_bad + 1], chosen_bad, False))
        limit = chosen_bad if chosen_bad is not None else len(path)
        alts = [(k, next((r for r in by_pos.get(k, []) if rating(r) == -1), None)) for k in range(limit + 1)]
        alts = [(k, r) for k, r in alts if r is not None and (chosen_bad is None or k < chosen_bad)]
        if chosen_bad is None and alts:
            k, r = alts[0]
            items.append(_item(f"{base}-err", problem, [*path[:k], step_text(r)], k, False))
            alts = alts[1:]
        if alternatives:
            for k, r in alts:
                items.append(_item(f"{base}-alt{k}", problem, [*path[:k], step_text(r)], k, False))
        terminal = by_pos.get(len(path), [])
        good = next((r for r in terminal if rating(r) == 1 and bool(r.get("is_solution"))), None)
        if good is not None and chosen_bad is None:
            items.append(_item(f"{base}-ok", problem, [*path, step_text(good)], -1, True))
    return items


def _item(item_id: str, problem: str, steps: list[str], label: int, correct: bool) -> dict[str, Any]:
    return {
        "id": item_id,
        "problem": problem,
        "steps": list(steps),
        "final_answer_correct": correct,
        "label": label,
    }


def normalize_problem(text: str) -> str:
    t = text.replace("\\$", "$").replace("$", "")
    return re.sub(r"\s+", " ", t).strip().lower()
