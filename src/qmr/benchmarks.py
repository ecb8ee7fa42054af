"""Real benchmark loaders: local files (jsonl/json/csv/parquet) or the Hugging Face hub, normalized to
the benchmark record schema ``{id, source, question, answer, solution?, subject?, level?}``.

Formats (``benchmarks.<name>.format``; ``auto`` guesses from the fields):
- ``gsm8k``: question, answer ("... #### N")           -> answer N (commas stripped), solution kept
- ``math``: problem, solution, answer, unique_id, ...    -> MATH-500 / MATH train / Minerva (answer from
  the last \\boxed{} of the solution when no answer field)
- ``aime``: problem, answer (int or "025"), id          -> answer as an integer string
- ``mmlu``: CSV rows question,A,B,C,D,letter (no header; the original release's ``<subject>_test.csv``
  files: the subject from the file name) or JSON {question, choices, answer 0-3, subject or type}
  -> the ``subject`` kept, and the question opens with MMLU's "The following is a multiple choice
  question about <subject>." (the id is taken from the question and choices alone)
- ``prm800k``: PRM800K "stepwise-critic" rows (instruction, responses, next_response, rating, ...), one
  per rated step -> one record per problem whose labelled path reaches the right answer with no step
  rated -1, with its human-rated ``steps`` (the format-alignment data of the paper, §3.1.2)
- ``toy``: already in the record schema
- ``records``: any benchmark already normalized to the record schema (a ``prepare`` output such as
  data/benchmarks/gsm8k.jsonl: ``id, source, question, answer`` with no ``####``), kept as is

``size`` (non-toy sources) keeps a seeded sample of that many records, not the first rows: stratified
by ``subject`` when the records have one (each subject its proportional share, largest remainders
first), in the file's order (`sample_records`).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

from qmr.io import DataFileError, read_jsonl
from qmr.registry import Registry

LETTERS = "ABCD"
# the original MMLU release: one CSV per subject and split, e.g. abstract_algebra_test.csv
_MMLU_FILE = re.compile(r"^(?P<subject>[a-z0-9_]+?)_(?:test|dev|val|validation|train|auxiliary_train)$")
MMLU_HEADER = "The following is a multiple choice question about {subject}."


def read_rows(path: Path) -> list[dict]:
    """The raw rows of one local file; any unreadable file is a DataFileError naming it."""
    from qmr.io import read_text_file

    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".parquet", ".csv"):
        raise DataFileError(f"{path}: unsupported file type {suffix!r}; allowed: .jsonl, .json, .csv, .parquet")
    if suffix == ".jsonl":
        rows = read_jsonl(path)
    elif suffix == ".json":
        text = read_text_file(path)
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise DataFileError(f"{path}: not valid JSON ({str(exc).splitlines()[0][:120]})") from None
        rows = data if isinstance(data, list) else data.get("data", []) if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise DataFileError(f"{path}: got a JSON {type(data).__name__}; allowed: a list of records or {{\"data\": [...]}}")
    elif suffix == ".parquet":
        import pandas as pd

        if not path.is_file():
            raise DataFileError(f"{path}: not a regular file; allowed: a parquet file")
        try:
            rows = pd.read_parquet(path).to_dict("records")
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a broken file
            raise DataFileError(f"{path}: not a readable parquet file ({type(exc).__name__})") from None
    else:
        import csv
        import io

        m = _MMLU_FILE.match(path.stem)
        subject = {"_subject": m.group("subject")} if m else {}
        rows = [{"question": r[0], "A": r[1], "B": r[2], "C": r[3], "D": r[4], "answer": r[5], "_csv": True, **subject}
                for r in csv.reader(io.StringIO(read_text_file(path), newline="")) if len(r) >= 6]  # fmt: skip
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise DataFileError(f"{path}: record {bad} is a {type(rows[bad]).__name__}; allowed: a JSON object per record")
    return rows


def _guess_format(row: dict) -> str:
    if "next_response" in row and "instruction" in row:
        return "prm800k"
    if "plan" in row:
        return "toy"
    if {"id", "source", "question", "answer"} <= set(row) and "####" not in str(row["answer"]):
        return "records"
    if "choices" in row or "_csv" in row:
        return "mmlu"
    if "question" in row and isinstance(row.get("answer"), str) and "####" in row["answer"]:
        return "gsm8k"
    if "unique_id" in row or "solution" in row:
        return "math"
    return "aime"


def _stable_id(prefix: str, text: str) -> str:
    return f"{prefix}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"


def prm800k_solutions(rows: list[dict], name: str) -> list[dict]:
    """Correct, fully rated PRM800K trajectories (stepwise-critic rows) as records with ``steps``."""
    from qmr.processbench import processbench_from_stepwise_critic

    for i, row in enumerate(rows[:1]):
        missing = [k for k in ("instruction", "responses", "next_response", "rating") if k not in row]
        if missing:
            raise DataFileError(f"record {i}: missing field {missing[0]!r} (format prm800k)")
    records = []
    for item in processbench_from_stepwise_critic(rows, id_prefix=name):
        if not item["final_answer_correct"]:
            continue
        *steps, last = item["steps"]
        body, _, answer = last.partition("# Answer")
        answer = answer.strip()
        if not answer:
            continue
        steps = [*steps, body.strip()] if body.strip() else steps
        q = item["problem"]
        records.append({"id": _stable_id(name, q), "source": "prm800k", "question": q, "answer": answer, "steps": steps})
    return records


# Record formats (`benchmarks.<name>.format`): name -> a row normalizer ``(row, name, index) -> record``.
# ``auto`` is not a format: it picks one of these from the first row's fields (`_guess_format`).
FORMATS = Registry(
    "benchmarks.<name>.format",
    {
        "toy": "qmr.benchmarks:as_is",
        "gsm8k": "qmr.benchmarks:gsm8k_record",
        "math": "qmr.benchmarks:math_record",
        "aime": "qmr.benchmarks:aime_record",
        "mmlu": "qmr.benchmarks:mmlu_record",
        "prm800k": "qmr.benchmarks:as_is",  # rows are grouped into records by `prm800k_solutions` first
        "records": "qmr.benchmarks:as_is",  # already normalized (a `prepare` output)
    },
)


def normalize(row: dict, fmt: str, name: str, index: int) -> dict:
    """One raw row -> a benchmark record; raises DataFileError naming the missing field."""
    if fmt not in FORMATS:
        raise DataFileError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    return FORMATS.load(fmt)(row, name, index)


def _need(row: dict, key: str, index: int, fmt: str):
    if key not in row or row[key] is None:
        raise DataFileError(f"record {index}: missing field {key!r} (format {fmt})")
    return row[key]


def as_is(row: dict, name: str, index: int) -> dict:
    """``toy``, ``records`` (and grouped ``prm800k``) rows are already records."""
    return row


def gsm8k_record(row: dict, name: str, index: int) -> dict:
    q, sol = _need(row, "question", index, "gsm8k"), _need(row, "answer", index, "gsm8k")
    if "####" not in sol:
        raise DataFileError(f"record {index}: field 'answer' has no '#### N' final answer (format gsm8k)")
    ans = sol.split("####")[-1].strip().replace(",", "")
    return {"id": _stable_id(name, q), "source": "gsm8k", "question": q, "answer": ans, "solution": sol}


def math_record(row: dict, name: str, index: int) -> dict:
    q, sol = _need(row, "problem", index, "math"), row.get("solution")
    ans = row.get("answer")
    if ans is None:
        from qmr.grading import extract_answer

        ans = extract_answer(sol or "", "math").value if sol else None
        if ans is None:
            raise DataFileError(f"record {index}: no 'answer' field and no \\boxed{{}} in 'solution' (format math)")
    rec = {"id": row.get("unique_id") or _stable_id(name, q), "source": "math", "question": q, "answer": str(ans)}
    for key in ("solution", "subject", "level"):
        if row.get(key) is not None:
            rec[key] = row[key]
    if row.get("type") and "subject" not in rec:
        rec["subject"] = row["type"]
    return rec


def aime_record(row: dict, name: str, index: int) -> dict:
    q = row.get("problem") or row.get("question")
    if q is None:
        raise DataFileError(f"record {index}: missing field 'problem' (format aime)")
    ans = _need(row, "answer", index, "aime")
    try:
        ans = str(int(float(str(ans).strip())))
    except ValueError:
        raise DataFileError(f"record {index}: field 'answer' = {ans!r} is not an integer (format aime)") from None
    rid = row.get("id")
    return {"id": f"{name}-{rid}" if rid is not None else _stable_id(name, q), "source": "aime", "question": q, "answer": ans}


def mmlu_record(row: dict, name: str, index: int) -> dict:
    q = _need(row, "question", index, "mmlu")
    if "_csv" in row:
        choices, letter = [row[c] for c in LETTERS], str(row["answer"]).strip()
    else:
        choices, idx = _need(row, "choices", index, "mmlu"), _need(row, "answer", index, "mmlu")
        letter = LETTERS[int(idx)] if not isinstance(idx, str) or idx.isdigit() else idx.strip()
    if letter not in LETTERS:
        raise DataFileError(f"record {index}: field 'answer' = {letter!r}; allowed: A, B, C, D (format mmlu)")
    text = q + "\n" + "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    subject = row.get("_subject") or row.get("subject") or row.get("type")
    rec = {"id": _stable_id(name, text), "source": "mmlu", "question": text, "answer": letter}
    if subject:
        rec["question"] = MMLU_HEADER.format(subject=str(subject).replace("_", " ")) + "\n\n" + text
        rec["subject"] = str(subject)
    return rec


def _check_record(rec: dict, fmt: str, index: int) -> None:
    """A normalized record has a string id, a non-empty string question and an answer."""
    for key in ("id", "question"):
        value = rec.get(key)
        if not isinstance(value, str) or not value.strip():
            shown = "<missing>" if key not in rec else repr(value)[:60]
            raise DataFileError(f"record {index}: field {key!r} = {shown}; allowed: a non-empty string (format {fmt})")
    if rec.get("answer") is None:
        raise DataFileError(f"record {index}: missing field 'answer' (format {fmt})")


def sample_records(records: list[dict], size: int, seed: int, name: str = "") -> list[dict]:
    """``size`` of ``records`` (all when ``size`` is 0 or not smaller), drawn with ``seed`` and kept in
    their original order; stratified by ``subject`` where records have one (each subject gets its
    proportional share, the largest remainders one more, ties by subject name), so a file sorted by
    subject (MMLU) is not cut to its first subjects."""
    if not size or size >= len(records):
        return records
    groups: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        groups.setdefault(str(rec.get("subject", "")), []).append(i)
    total = len(records)
    quota = {g: size * len(ix) // total for g, ix in groups.items()}
    by_remainder = sorted(groups, key=lambda g: (-(size * len(groups[g]) % total), g))
    for g in by_remainder[: size - sum(quota.values())]:
        quota[g] += 1
    keep: list[int] = []
    for g, ix in groups.items():
        ix = list(ix)
        random.Random(f"{seed}:{name}:{g}").shuffle(ix)
        keep.extend(ix[: quota[g]])
    return [records[i] for i in sorted(keep)]


def load_benchmark(spec, name: str, seed: int = 0) -> list[dict]:
    """Load a local file/folder or hub dataset described by a BenchmarkSpec into benchmark records
    (``spec.size`` of them: a seeded sample, see `sample_records`)."""
    if spec.source == "hub":
        try:
            import datasets
        except ImportError:
            raise DataFileError("benchmarks: source 'hub' needs the `datasets` package: pip install 'qmr[hub]'") from None
        extra = {"data_files": spec.data_files} if getattr(spec, "data_files", None) else {}
        from qmr.hub import hub_errors

        with hub_errors(f"benchmarks.{name}", spec.hub_id, spec.revision, "dataset"):
            ds = datasets.load_dataset(spec.hub_id, spec.subset, revision=spec.revision, split=spec.split, **extra)
        rows, where = [dict(r) for r in ds], f"{spec.hub_id}@{spec.revision}"
    else:
        path = Path(spec.path)
        files = sorted(path.glob("*.csv")) + sorted(path.glob("*.jsonl")) + sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        rows, where = [], str(path)
        for f in files:
            rows.extend(read_rows(f))
    if not rows:
        raise DataFileError(f"{where}: no records" + (" (a folder without .csv, .jsonl or .parquet files)" if spec.source != "hub" and Path(spec.path).is_dir() else ""))
    records, _ = normalize_rows(rows, spec.format, name, where)
    return sample_records(records, spec.size, seed, name)


def normalize_rows(rows: list[dict], fmt: str, name: str, where: str) -> tuple[list[dict], str]:
    """Raw rows of one benchmark -> (records in the record schema, the format used: ``fmt``, or the
    guessed one for ``auto``); a bad row is a DataFileError naming ``where``, the record and the field."""
    fmt = fmt if fmt != "auto" else _guess_format(rows[0])
    if fmt == "prm800k":
        try:
            rows = prm800k_solutions(rows, name)
        except DataFileError as exc:
            raise DataFileError(f"{where}: {exc}") from None
        if not rows:
            raise DataFileError(f"{where}: no PRM800K trajectory reaches the right answer without a step rated -1")
    records, seen = [], {}
    for i, row in enumerate(rows):
        try:
            try:
                rec = normalize(row, fmt, name, i)
            except (TypeError, AttributeError, ValueError) as exc:  # a field of the wrong type (a number for a text, ...)
                if isinstance(exc, DataFileError):
                    raise
                raise DataFileError(f"record {i}: a field has the wrong type for format {fmt} ({type(exc).__name__}: {exc})") from None
            _check_record(rec, fmt, i)
        except DataFileError as exc:
            raise DataFileError(f"{where}: {exc}") from None
        # A benchmark may repeat a question (MMLU STEM does, across subjects): every row is kept, as
        # published, and a repeat gets a numbered id so ids stay unique.
        n = seen.get(rec["id"], 0) + 1
        seen[rec["id"]] = n
        if n > 1:
            rec["id"] = f"{rec['id']}-{n}"
        records.append(rec)
    return records, fmt
