"""Human annotation packets (paper Appendix C) and the verdicts annotators write back.

One directory per escalated or audited case (`packet_dir`)::

    problem.txt            the problem statement
    answers.json           {"gold": ..., "fp": ..., "quantized": ...}
    fp_trace.txt           the full-precision solution, numbered steps
    qt_trace.txt           the quantized solution, numbered steps (error_step refers to these numbers)
    judge_outputs/<judge>.json
    vote_summary.json      the machine label (rule, votes, proposal, audit flag)
    instructions.md        the taxonomy, the verdict format and where the verdict goes

Packets are outputs (rewritten by every `vote` run). The annotator's verdict is an *input*, kept apart
from them, in the verdict tree (``annotations/<model>/<variant>/`` in the pipeline, committed to
git and declared as a dependency of `vote`), one file per case (`verdict_path`)::

    <packet name>.json     written by the annotator, never by the pipeline:
        {"quantized_error_analysis": {"primary_error_type": "...", "error_step": 4,
                                      "explanation": "...", "confidence_score": 0.83}}

`apply_human_verdicts` gives every label with a verdict file the annotator's type and step (rule
``human``) and keeps the machine's answer under ``machine``. Confidence bands: 0.90–1.00 clear,
0.80–0.89 moderate, 0.70–0.79 split, below 0.70 low.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from qmr.io import DataFileError, read_json, write_json, write_text
from qmr.locate.cases import Case
from qmr.locate.taxonomy import ANSWERS, DESCRIPTIONS, NO_ERROR, category_of, normalize_type
from qmr.steps import number_steps

VERDICT_SUFFIX = ".json"


class HumanVerdictError(DataFileError):
    """A human verdict file is malformed; the message names the file, the field, the value and what is allowed."""


PACKET_NAME_MAX = 80


def packet_name(case_id: str) -> str:
    """A filesystem-safe, collision-free directory name for a case id (or a judge name).

    A clean id (letters, digits, '.', '_', '-'; at most 80 characters) is its own name. Any other id
    gets a readable prefix and a hash of the whole id, so ``q/1`` and ``q_1``, or ``..`` and ``__``,
    never share a packet, and a 300-character id stays a legal file name. The id itself is in the
    packet's ``vote_summary.json``.
    """
    s = str(case_id)
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("._")[:PACKET_NAME_MAX]
    if clean == s:
        return s
    import hashlib

    return f"{clean or 'case'}-{hashlib.sha256(s.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def packet_dir(root: str | Path, case_id: str) -> Path:
    return Path(root) / packet_name(case_id)


def verdict_path(verdict_root: str | Path, case_id: str) -> Path:
    """Where the annotator's verdict for one case lives: ``<verdict_root>/<packet name>.json``."""
    return Path(verdict_root) / f"{packet_name(case_id)}{VERDICT_SUFFIX}"


def _instructions(n_steps: int, verdict: Path | None) -> str:
    lines = [
        "# Annotating one case",
        "",
        "Read problem.txt, answers.json, fp_trace.txt and qt_trace.txt. Find the FIRST faulty step of the",
        "quantized solution (qt_trace.txt numbering) and its error type; judge_outputs/ and vote_summary.json",
        "show what the machine judges said. When several types apply, choose the first in this list:",
        "",
    ]
    lines += [f"- `{t}`: {DESCRIPTIONS[t]}" for t in DESCRIPTIONS]
    lines += [
        f"- `{NO_ERROR}`: the quantized solution has no real error (error_step: null)",
        "",
        f"Write your verdict to `{verdict if verdict is not None else '<verdict tree>/<packet>.json'}`"
        f" (error_step between 1 and {n_steps}); then `dvc repro` applies it (re-runs `vote` and what follows):",
        "",
        "```json",
        '{"quantized_error_analysis": {"primary_error_type": "computational_error", "error_step": 2,',
        '  "explanation": "...", "confidence_score": 0.9}}',
        "```",
        "",
        "confidence_score: 0.90-1.00 clear, 0.80-0.89 moderate, 0.70-0.79 split between two readings.",
        "",
    ]
    return "\n".join(lines)


def write_packet(
    directory: str | Path,
    case: Case,
    judgments: list[dict[str, Any]],
    label: dict[str, Any],
    verdict: str | Path | None = None,
) -> Path:
    """Write (or refresh) one case's packet; ``verdict`` is where its instructions say the verdict goes."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    write_text(d / "problem.txt", case.question.strip() + "\n")
    write_json(d / "answers.json", {"gold": case.gold_answer, "fp": case.fp_pred, "quantized": case.qt_pred})
    write_text(
        d / "fp_trace.txt", (number_steps(case.fp_steps) if case.fp_steps else "(not available)") + "\n"
    )
    write_text(d / "qt_trace.txt", number_steps(case.qt_steps) + "\n")
    out_dir = d / "judge_outputs"
    out_dir.mkdir(exist_ok=True)
    for j in judgments:
        write_json(out_dir / f"{packet_name(j['judge'])}.json", j)
    write_json(d / "vote_summary.json", label)
    write_text(d / "instructions.md", _instructions(len(case.qt_steps), None if verdict is None else Path(verdict)))
    return d


def confidence_band(score: float | None) -> str | None:
    """clear (>= 0.90), moderate (0.80-0.89), split (0.70-0.79), low (< 0.70); None for None."""
    if score is None:
        return None
    if score >= 0.90:
        return "clear"
    if score >= 0.80:
        return "moderate"
    if score >= 0.70:
        return "split"
    return "low"


def _problem(path: Path, key: str, value: Any, allowed: str) -> str:
    return f"{path}: {key}: got {value!r}; allowed: {allowed}"


def read_human_verdict(path: str | Path, n_steps: int | None = None) -> dict[str, Any]:
    """Validate one human verdict file; returns {primary_error_type, error_step, explanation, confidence_score}.

    Raises `HumanVerdictError` listing every problem (file, field, value, what is allowed).
    """
    path = Path(path)
    try:
        data = read_json(path)
    except DataFileError as exc:
        raise HumanVerdictError(str(exc)) from None
    if not isinstance(data, dict) or not isinstance(data.get("quantized_error_analysis"), dict):
        raise HumanVerdictError(
            _problem(path, "quantized_error_analysis", data if not isinstance(data, dict) else data.get("quantized_error_analysis"),
                     'an object {"quantized_error_analysis": {"primary_error_type", "error_step", "explanation", "confidence_score"}}')
        )  # fmt: skip
    v = data["quantized_error_analysis"]
    k = "quantized_error_analysis"
    problems: list[str] = []
    raw_type = v.get("primary_error_type", "<missing>")
    etype = normalize_type(raw_type) if isinstance(raw_type, str) else None
    if etype is None:
        problems.append(_problem(path, f"{k}.primary_error_type", raw_type, "one of " + ", ".join(ANSWERS)))
    step = v.get("error_step", "<missing>")
    step_allowed = f"an integer from 1 to {n_steps}" if n_steps else "an integer >= 1"
    if etype == NO_ERROR:
        if step is not None and step != "<missing>":
            problems.append(_problem(path, f"{k}.error_step", step, "null for no_error"))
        step = None
    elif not (
        isinstance(step, int)
        and not isinstance(step, bool)
        and step >= 1
        and (n_steps is None or step <= n_steps)
    ):
        problems.append(_problem(path, f"{k}.error_step", step, step_allowed))
    expl = v.get("explanation", "<missing>")
    if "explanation" not in v or not isinstance(expl, str):
        problems.append(_problem(path, f"{k}.explanation", expl, "a string"))
    conf = v.get("confidence_score", "<missing>")
    if not (isinstance(conf, (int, float)) and not isinstance(conf, bool) and 0.0 <= conf <= 1.0):
        problems.append(_problem(path, f"{k}.confidence_score", conf, "a number in [0, 1]"))
    if problems:
        raise HumanVerdictError("\n".join(problems))
    return {
        "primary_error_type": etype,
        "error_step": step,
        "explanation": expl,
        "confidence_score": float(conf),
    }


def apply_human_verdicts(
    labels: list[dict[str, Any]], verdict_root: str | Path, cases: list[Case] | None = None
) -> list[dict[str, Any]]:
    """New labels: those with a verdict file get the human's answer (rule ``human``).

    The machine's answer is kept as ``machine: {primary_error_type, error_step, rule}``; audited labels
    also get ``audit_agrees`` (human type and step equal the machine's). Every bad verdict file is
    reported in one `HumanVerdictError`.
    """
    n_steps = {c.id: len(c.qt_steps) for c in cases} if cases is not None else {}
    out: list[dict[str, Any]] = []
    errors: list[str] = []
    for lab in labels:
        path = verdict_path(verdict_root, lab["id"])
        if not path.exists():
            out.append(dict(lab))
            continue
        try:
            verdict = read_human_verdict(path, n_steps.get(lab["id"]))
        except HumanVerdictError as exc:
            errors.append(str(exc))
            out.append(dict(lab))
            continue
        new = dict(lab)
        machine = {k: lab.get(k) for k in ("primary_error_type", "error_step", "rule")}
        new.update(
            primary_error_type=verdict["primary_error_type"],
            category=category_of(verdict["primary_error_type"]),
            error_step=verdict["error_step"],
            rule="human",
            needs_human=False,
            machine=machine,
            human_confidence=verdict["confidence_score"],
            human_band=confidence_band(verdict["confidence_score"]),
            human_explanation=verdict["explanation"],
        )
        if lab.get("audit"):
            new["audit_agrees"] = (
                machine["primary_error_type"] == verdict["primary_error_type"]
                and machine["error_step"] == verdict["error_step"]
            )
        out.append(new)
    if errors:
        raise HumanVerdictError("\n".join(errors))
    return out
