"""Step segmentation: the ONE definition of "step k" used by generation, judges, voting and silver.

Every 1-indexed ``error_step`` in the project refers to the list returned by `split_steps` for the
trace text. The rules, tried in order:

1. **PRM800K-style markers** — if any line starts with ``Step k:`` (also ``Step k.``, ``**Step k:**``,
   ``## Step k:``), the text is cut at those markers and each step is the text after its marker (the
   marker itself is dropped). Non-empty text before the first marker becomes a step of its own, so no
   content is lost.
2. **Line-structured text** (the toy format, and most chat "one step per line" output) — one step per
   non-empty line, including the closing ``The answer is N.`` line. Text counts as line-structured
   when it has no blank-line-separated paragraph that spans several lines.
3. **Paragraphs** (fallback) — blank-line-separated blocks, each stripped, for prose where one step
   spans several lines (wrapped sentences, display math).

`number_steps` renders a step list as ``Step 1: …\\nStep 2: …`` for judges and annotators.
`step_target` writes a benchmark record's worked solution in the pipeline's step format (one step per
line, closing ``The answer is N.``): the targets of `align` and the solutions of the calibration texts.
"""

from __future__ import annotations

import re

_MARKER = re.compile(
    r"(?im)^[ \t]*(?:#+[ \t]*)?(?:\*\*)?[ \t]*step[ \t]+(\d+)[ \t]*(?:\*\*)?[ \t]*[:.)][ \t]*(?:\*\*)?"
)
_BLANK = re.compile(r"\n[ \t]*\n")
#: A GSM8K calculator annotation ``<<48/2=24>>`` (expression, claimed value): the one pattern, also read
#: as an arithmetic claim by `qmr.locate.arith`.
CALCULATOR_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
_CLOSING = re.compile(r"(?i)^(the (final )?answer is\b|#+\s*answer\b|####)")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def split_steps(text: str) -> list[str]:
    """Split a solution into steps (see the module docstring for the rules)."""
    if not text:
        return []
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    markers = list(_MARKER.finditer(text))
    if markers:
        steps: list[str] = []
        preamble = text[: markers[0].start()].strip()
        if preamble:
            steps.append(preamble)
        for i, m in enumerate(markers):
            end = markers[i + 1].start() if i + 1 < len(markers) else len(text)
            body = text[m.end() : end].strip()
            if body:
                steps.append(body)
        return steps
    paragraphs = [p.strip() for p in _BLANK.split(text) if p.strip()]
    if len(paragraphs) > 1 and any("\n" in p for p in paragraphs):
        return paragraphs
    return [line.strip() for line in text.split("\n") if line.strip()]


def number_steps(steps: list[str]) -> str:
    """``Step 1: …`` lines (a multi-line step keeps its inner line breaks)."""
    return "\n".join(f"Step {i}: {s}" for i, s in enumerate(steps, start=1))


def strip_annotations(text: str) -> str:
    """``text`` without GSM8K calculator annotations (``48/2 = <<48/2=24>>24`` -> ``48/2 = 24``)."""
    return CALCULATOR_ANNOTATION.sub("", text)


def step_target(record: dict) -> str | None:
    """``record``'s worked solution in the step format, or None when it has no usable solution.

    Human-rated ``steps`` (PRM800K) are kept as they are; a ``solution`` is cut with `split_steps`
    (into sentences when it is one paragraph); calculator annotations are removed; a closing answer line
    of the source (``The answer is …``, ``# Answer``, GSM8K's ``#### N``) is replaced by
    ``The answer is <gold>.``."""
    from qmr.prompts import ANSWER_SENTENCE

    answer = record.get("answer")
    if record.get("steps"):
        steps = [str(s) for s in record["steps"]]
    elif record.get("solution"):
        steps = split_steps(strip_annotations(str(record["solution"])))
        if len(steps) == 1:
            steps = [s for s in _SENTENCE.split(steps[0]) if s.strip()]
    else:
        return None
    steps = [" ".join(strip_annotations(s).split()) for s in steps]
    steps = [s for s in steps if s and not _CLOSING.match(s)]
    if not steps or answer is None or str(answer).strip() == "":
        return None
    return "\n".join([*steps, ANSWER_SENTENCE.format(answer=str(answer).strip())])
