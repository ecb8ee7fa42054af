"""Real benchmark loaders on the shared copies in ../shared/data (skipped cleanly where absent).

`qmr prepare` on params pointing at the real files: record counts, answer fields, and a MATH mining
pool with nothing in common with MATH-500. Nothing from ../shared is copied into the repository.
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from click.testing import CliRunner

from qmr.cli import main


def _benchmarks(data) -> dict:
    return {
        "gsm8k_train": {"source": "local", "path": str(data / "gsm8k/train.jsonl"), "role": "train", "size": 64},
        "gsm8k": {"source": "local", "path": str(data / "gsm8k/test.jsonl"), "role": "eval"},
        "math500": {"source": "local", "path": str(data / "math/math500_test.jsonl"), "role": "eval"},
        "aime": {"source": "local", "path": str(data / "aime/aime_2022_2025.jsonl"), "role": "eval", "kind": "integer"},
        "math_train": {"source": "local", "path": str(data / "math/prm800k_math_train_reconstructed.jsonl"), "role": "mine"},
        "mmlu_stem": {"source": "local", "path": str(data / "mmlu/mmlu_stem_test.qwen25math.jsonl"), "role": "eval", "kind": "choice"},
        "mmlu_algebra": {"source": "local", "path": str(data / "mmlu/test/abstract_algebra_test.csv"), "role": "eval", "kind": "choice"},
        "amc23": {"source": "local", "path": str(data / "qwen25_math_eval/amc23_test.jsonl"), "role": "eval", "format": "aime", "kind": "integer"},
        "minerva": {"source": "local", "path": str(data / "qwen25_math_eval/minerva_math_test.jsonl"), "role": "eval", "format": "math"},
        "prm800k": {"source": "local", "path": str(data / "prm800k/phase1_train_plus.stepwise-critic.parquet"), "role": "train", "format": "prm800k"},
    }


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from pathlib import Path

    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (data / "gsm8k" / "test.jsonl").is_file():
        pytest.skip(f"shared benchmark data not found at {data}")
    repo = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params = copy.deepcopy(params)
    params["benchmarks"] = _benchmarks(data)
    params["quantize"]["calibration"]["benchmark"] = "gsm8k_train"
    params["generate"]["benchmarks"] = ["gsm8k", "math500", "math_train"]
    params["models"]["toy"]["prompt_style"] = "plain"
    params["align"].update(data="prm800k", eval_benchmark="gsm8k")
    work = tmp_path_factory.mktemp("prepare")
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    import os

    cwd = os.getcwd()
    os.chdir(work)
    try:
        result = CliRunner().invoke(main, ["--params", "params.yaml", "prepare"])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    records = {p.stem: [json.loads(line) for line in p.read_text().splitlines()] for p in (work / "data" / "benchmarks").glob("*.jsonl")}
    return records, json.loads((work / "metrics" / "prepare.json").read_text())


def test_counts(prepared):
    records, summary = prepared
    assert len(records["gsm8k"]) == 1319
    assert len(records["math500"]) == 500
    assert len(records["aime"]) == 119  # AIME 2022-2025 I and II: 4 years x 2 contests x 15, one duplicate dropped upstream
    assert len(records["gsm8k_train"]) == 64
    assert len(records["amc23"]) == 40 and len(records["minerva"]) == 272
    assert len(records["mmlu_stem"]) == 3018
    assert summary["math_train"]["records"] == len(records["math_train"])
    # format-alignment data: PRM800K trajectories that reach the right answer with no step rated -1, minus eval overlaps
    assert 700 <= len(records["prm800k"]) <= 805 and all(len(r["steps"]) >= 1 for r in records["prm800k"])


def test_math_mining_pool_is_disjoint_from_math500(prepared):
    records, summary = prepared
    math500_ids = {r["id"] for r in records["math500"]}
    pool_ids = {r["id"] for r in records["math_train"]}
    assert math500_ids and not (math500_ids & pool_ids)
    texts = {" ".join(r["question"].lower().split()) for r in records["math500"]}
    assert not any(" ".join(r["question"].lower().split()) in texts for r in records["math_train"])
    # the 12k split does not contain MATH-500 by construction; what dedupe removed is reported either way
    assert len(records["math_train"]) + summary["math_train"]["removed_overlap"] == 12000


def test_answer_fields(prepared):
    records, _ = prepared
    assert all(r["answer"].lstrip("-").replace(".", "").isdigit() for r in records["gsm8k"])
    assert all(r["id"].startswith("test/") for r in records["math500"])  # MATH unique_id kept as the id
    assert all(r["answer"].isdigit() and str(int(r["answer"])) == r["answer"] for r in records["aime"])
    assert {r["answer"] for r in records["mmlu_stem"]} <= set("ABCD")
    assert {r["answer"] for r in records["mmlu_algebra"]} <= set("ABCD") and len(records["mmlu_algebra"]) == 100
    assert all("\nA. " in r["question"] and "\nD. " in r["question"] for r in records["mmlu_stem"])
    assert all(r["answer"] for r in records["minerva"])  # from the last \boxed{} of each solution
    assert len({r["id"] for recs in records.values() for r in recs}) == sum(len(v) for v in records.values())


# --------------------------------------------------------------------------------------------------
# MMLU: the subject is kept (record and prompt) and `size` draws across subjects (synthetic files)
# --------------------------------------------------------------------------------------------------

SUBJECTS = ("abstract_algebra", "anatomy", "astronomy")


def _mmlu_csv_folder(root, per_subject: int = 10):
    """The original release's layout: <subject>_test.csv, no header: question, A, B, C, D, answer."""
    import csv

    root.mkdir(parents=True, exist_ok=True)
    for subject in SUBJECTS:
        with (root / f"{subject}_test.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            for i in range(per_subject):
                writer.writerow([f"{subject} question {i}, with a comma?", "one", "two", "three", "four", "ABCD"[i % 4]])
    return root


def _spec(path, **kw):
    from qmr.params import BenchmarkSpec

    return BenchmarkSpec(source="local", path=str(path), format="mmlu", role="eval", kind="choice", **kw)


def test_mmlu_csv_keeps_the_subject_from_the_file_name(tmp_path):
    from qmr.benchmarks import load_benchmark

    recs = load_benchmark(_spec(_mmlu_csv_folder(tmp_path / "test")), "mmlu")
    assert len(recs) == 30
    assert {r["subject"] for r in recs} == set(SUBJECTS)
    first = next(r for r in recs if r["subject"] == "anatomy")
    assert first["question"].startswith("The following is a multiple choice question about anatomy.\n\n")
    assert first["question"].endswith("anatomy question 0, with a comma?\nA. one\nB. two\nC. three\nD. four")


def test_mmlu_json_layouts_keep_the_subject(tmp_path):
    """cais/mmlu (``subject``) and the Qwen2.5-Math STEM copy (``type``)."""
    from qmr.benchmarks import load_benchmark

    rows = [{"question": "What is 2+2?", "subject": "elementary_mathematics", "choices": ["1", "2", "3", "4"], "answer": 3},
            {"question": "Which is a prime?", "type": "college_mathematics", "choices": ["4", "6", "7", "9"], "answer": 2}]  # fmt: skip
    path = tmp_path / "mmlu.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a, b = load_benchmark(_spec(path), "mmlu")
    assert (a["subject"], a["answer"], b["subject"], b["answer"]) == ("elementary_mathematics", "D", "college_mathematics", "C")
    assert a["question"].startswith("The following is a multiple choice question about elementary mathematics.\n\nWhat is 2+2?")


def test_size_draws_a_seeded_sample_across_subjects_not_the_first_rows(tmp_path):
    from collections import Counter

    from qmr.benchmarks import load_benchmark

    folder = _mmlu_csv_folder(tmp_path / "test")
    everything = load_benchmark(_spec(folder), "mmlu")
    recs = load_benchmark(_spec(folder, size=9), "mmlu", seed=0)
    assert len(recs) == 9 and Counter(r["subject"] for r in recs) == {s: 3 for s in SUBJECTS}  # stratified
    assert [r["id"] for r in recs] == [r["id"] for r in load_benchmark(_spec(folder, size=9), "mmlu", seed=0)]  # deterministic
    order = {r["id"]: i for i, r in enumerate(everything)}
    assert [order[r["id"]] for r in recs] == sorted(order[r["id"]] for r in recs)  # in the file's order
    assert {r["id"] for r in recs} != {r["id"] for r in load_benchmark(_spec(folder, size=9), "mmlu", seed=1)}  # seeded
    assert {r["id"] for r in recs} != {r["id"] for r in everything[:3] + everything[10:13] + everything[20:23]}
    # without subjects (GSM8K-style rows): a seeded sample too, not the first rows
    rows = [{"question": f"q{i}", "answer": f"{i} + 0 = {i}\n#### {i}"} for i in range(50)]
    path = tmp_path / "gsm.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from qmr.params import BenchmarkSpec

    got = load_benchmark(BenchmarkSpec(source="local", path=str(path), role="train", size=10), "g", seed=0)
    assert len(got) == 10 and [r["answer"] for r in got] != [str(i) for i in range(10)]
    assert load_benchmark(BenchmarkSpec(source="local", path=str(path), role="train", size=50), "g")[0]["answer"] == "0"


def test_real_mmlu_csv_folder_sample_covers_the_subjects(shared_data):
    from qmr.benchmarks import load_benchmark

    folder = shared_data / "mmlu" / "test"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    recs = load_benchmark(_spec(folder, size=200), "mmlu", seed=0)
    subjects = {r["subject"] for r in recs}
    assert len(recs) == 200 and len(subjects) == 57  # the first 200 rows are abstract_algebra and anatomy only
    assert all(r["question"].startswith(f"The following is a multiple choice question about {r['subject'].replace('_', ' ')}.")
               for r in recs)  # fmt: skip
