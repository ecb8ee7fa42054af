"""`qmr judge-bench` cannot mislead: ``--gold`` goes through the benchmark loaders (a raw GSM8K file and
its normalized copy score the same), the table shows abstentions and escalations per judge, and a
judge that abstains on every item is flagged."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from click.testing import CliRunner

from qmr.io import read_jsonl, write_jsonl
from qmr.processbench import write_processbench

# GSM8K's own layout: ``answer`` is the worked solution with calculator annotations, ending "#### N"
RAW_GSM8K = [
    {
        "question": "Tom has 5 boxes with 12 pencils in each box. He gives away 17 pencils. How many pencils does Tom have left?",
        "answer": "Tom has 5 * 12 = <<5*12=60>>60 pencils.\nHe has 60 - 17 = <<60-17=43>>43 pencils left.\n#### 43",
    },
    {
        "question": "A baker makes 8 trays of 9 muffins and sells 30 of them. How many muffins are left?",
        "answer": "The baker makes 8 * 9 = <<8*9=72>>72 muffins.\nThere are 72 - 30 = <<72-30=42>>42 left.\n#### 42",
    },
]
ITEMS = [
    {"id": "t-ok", "problem": RAW_GSM8K[0]["question"], "steps": ["Tom has 5 * 12 = 60 pencils.", "He has 60 - 17 = 43 pencils left.", "The answer is 43."], "final_answer_correct": True, "label": -1},
    {"id": "t-ce", "problem": RAW_GSM8K[0]["question"], "steps": ["Tom has 5 * 12 = 70 pencils.", "He has 70 - 17 = 53 pencils left.", "The answer is 53."], "final_answer_correct": False, "label": 0},
    {"id": "b-ok", "problem": RAW_GSM8K[1]["question"], "steps": ["8 * 9 = 72 muffins.", "72 - 30 = 42 left.", "The answer is 42."], "final_answer_correct": True, "label": -1},
    {"id": "b-lr", "problem": RAW_GSM8K[1]["question"], "steps": ["8 * 9 = 72 muffins.", "72 + 30 = 102 left.", "The answer is 102."], "final_answer_correct": False, "label": 1},
]  # fmt: skip


def _project(tmp_path, monkeypatch, default_params):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(default_params))


def _bench(*args: str) -> tuple[dict, str]:
    from qmr.cli import main

    out = CliRunner().invoke(main, ["judge-bench", *args, "--json", "scores.json"])
    assert out.exit_code == 0, out.output
    with open("scores.json") as f:
        return json.load(f), out.output


def _scores(s: dict) -> dict:
    """What must not depend on how the gold file was laid out."""
    return {"judges": s["judges"], "ensemble": s["ensemble"], "gold_attached": s["gold_attached"]}


def test_raw_and_normalized_gsm8k_gold_score_the_same(tmp_path, monkeypatch, default_params):
    from qmr.benchmarks import load_benchmark
    from qmr.params import BenchmarkSpec

    _project(tmp_path, monkeypatch, default_params)
    write_processbench(tmp_path / "pb.json", ITEMS)
    write_jsonl(tmp_path / "raw.jsonl", RAW_GSM8K)
    normalized = load_benchmark(BenchmarkSpec(source="local", path="raw.jsonl"), "gsm8k")
    write_jsonl(tmp_path / "normalized.jsonl", normalized)
    raw, shown = _bench("pb.json", "--gold", "raw.jsonl")
    norm, _ = _bench("pb.json", "--gold", "normalized.jsonl")
    forced, _ = _bench("pb.json", "--gold", "raw.jsonl", "--gold-format", "gsm8k")
    assert _scores(raw) == _scores(norm) == _scores(forced)
    assert raw["gold_format"] == "gsm8k" and norm["gold_format"] == "records"
    ref = raw["judges"]["reference"]
    assert ref["abstained"] == 0 and ref["f1"] == 1.0, ref  # the gold path is found on every item
    assert raw["warnings"] == []
    header = shown.splitlines()[1].split()
    assert header == ["judge", "n_err", "n_ok", "err_acc", "ok_acc", "F1", "abstain", "invalid", "escal"]
    bad = CliRunner().invoke(__import__("qmr.cli").cli.main, ["judge-bench", "pb.json", "--gold", "raw.jsonl", "--gold-format", "gsm8"])
    assert bad.exit_code == 2 and "--gold-format: got 'gsm8'" in bad.output and "did you mean 'gsm8k'" in bad.output


def test_a_judge_that_abstains_on_every_item_is_flagged(tmp_path, monkeypatch, default_params, caplog):
    """Without gold solutions the reference judge abstains everywhere: the table says so (abstain
    column), and a warning is logged and written to --json — not a quiet ok_acc 1.000."""
    _project(tmp_path, monkeypatch, default_params)
    write_processbench(tmp_path / "pb.json", ITEMS)
    with caplog.at_level("WARNING"):
        s, shown = _bench("pb.json")
    ref = s["judges"]["reference"]
    assert ref["abstained"] == len(ITEMS) and ref["correct_accuracy"] == 1.0
    assert any("reference" in w and "abstained on every item" in w for w in s["warnings"]), s["warnings"]
    assert any("abstained on every item" in r.getMessage() for r in caplog.records)
    row = next(line for line in shown.splitlines() if line.startswith("reference"))
    assert row.split()[6] == str(len(ITEMS))
    # escalations per judge: the ensemble row counts escalated and all-abstained cases
    ens = s["ensemble"]
    assert {"abstained", "escalated"} <= set(ens)


def _items_from_gsm8k(records: list[dict], n: int) -> list[dict]:
    """ProcessBench-style items from GSM8K's worked solutions: each solution as correct steps, and a
    copy with the first calculator result off by one (that step is the first error)."""
    items = []
    for i, rec in enumerate(records[:n]):
        body, _, answer = rec["answer"].rpartition("####")
        lines = [re.sub(r"<<[^>]*>>", "", line).strip() for line in body.strip().splitlines() if line.strip()]
        steps = [*lines, f"The answer is {answer.strip()}."]
        items.append({"id": f"g{i}-ok", "problem": rec["question"], "steps": steps, "final_answer_correct": True, "label": -1})
        m = re.search(r"<<([^=>]*)=([\d.]+)>>", body)
        k = next((j for j, line in enumerate(body.strip().splitlines()) if m and m.group(0) in line), None)
        if m is None or k is None or k >= len(lines):
            continue
        wrong = str(int(float(m.group(2))) + 1)
        bad = re.sub(rf"=\s*\$?{re.escape(m.group(2))}\b", f"= {wrong}", lines[k], count=1)
        if bad == lines[k]:
            continue
        items.append({"id": f"g{i}-err", "problem": rec["question"], "steps": [*lines[:k], bad], "final_answer_correct": False, "label": k})
    return items


def test_real_gsm8k_test_file_raw_and_normalized(tmp_path, monkeypatch, default_params, shared_data):
    raw_path = shared_data / "gsm8k" / "test.jsonl"
    if not raw_path.exists():
        pytest.skip(f"{raw_path} not available")
    from qmr.benchmarks import load_benchmark
    from qmr.params import BenchmarkSpec

    _project(tmp_path, monkeypatch, default_params)
    items = _items_from_gsm8k(read_jsonl(raw_path), 25)
    write_processbench(tmp_path / "pb.json", items)
    write_jsonl(tmp_path / "normalized.jsonl", load_benchmark(BenchmarkSpec(source="local", path=str(raw_path)), "gsm8k"))
    raw, _ = _bench("pb.json", "--gold", str(raw_path))
    norm, _ = _bench("pb.json", "--gold", "normalized.jsonl")
    assert _scores(raw) == _scores(norm)
    assert raw["gold_attached"] == len(items)
    ref = raw["judges"]["reference"]
    assert ref["abstained"] < len(items) and not any("reference" in w for w in raw["warnings"])


# ProcessBench's published layout (hub dataset Qwen/ProcessBench, <split>.json): one row per solution
PUBLISHED = [
    {"id": "gsm8k-0", "generator": "Qwen2-7B-Instruct", "problem": RAW_GSM8K[0]["question"], "steps": ITEMS[1]["steps"], "final_answer_correct": False, "label": 0},
    {"id": "gsm8k-1", "generator": "Qwen2-7B-Instruct", "problem": RAW_GSM8K[0]["question"], "steps": ITEMS[0]["steps"], "final_answer_correct": True, "label": -1},
    {"id": "gsm8k-2", "generator": "Llama-3.1-8B-Instruct", "problem": RAW_GSM8K[1]["question"], "steps": ITEMS[3]["steps"], "final_answer_correct": False, "label": 1},
]  # fmt: skip


def _written(tmp_path, layout: str):
    if layout == "json":
        path = tmp_path / "gsm8k.json"
        path.write_text(json.dumps(PUBLISHED))
    elif layout == "jsonl-named-json":
        path = tmp_path / "gsm8k.json"
        path.write_text("\n".join(json.dumps(r) for r in PUBLISHED) + "\n")
    elif layout == "parquet":
        pd = pytest.importorskip("pandas")
        pytest.importorskip("pyarrow")
        path = tmp_path / "gsm8k-00000-of-00001.parquet"
        pd.DataFrame(PUBLISHED).to_parquet(path)
    else:  # TRL stepwise supervision: prompt, completions, labels per step
        path = tmp_path / "gsm8k.jsonl"
        rows = [{"prompt": r["problem"], "completions": r["steps"], "labels": [k < r["label"] or r["label"] < 0 for k in range(len(r["steps"]))]} for r in PUBLISHED]
        write_jsonl(path, rows)
    return path


@pytest.mark.parametrize("layout", ["json", "jsonl-named-json", "parquet", "trl"])
def test_processbench_from_published(tmp_path, monkeypatch, default_params, layout):
    from qmr.cli import main
    from qmr.processbench import read_processbench

    _project(tmp_path, monkeypatch, default_params)
    src = _written(tmp_path, layout)
    out = CliRunner().invoke(main, ["processbench-from-published", "pb.json", "--source", str(src), "--split", "gsm8k"])
    assert out.exit_code == 0, out.output
    assert "3 items (2 with an error, 1 correct)" in out.output
    items = read_processbench(tmp_path / "pb.json")
    assert [it["label"] for it in items] == [0, -1, 1] and all(it["source"] == "gsm8k" for it in items)
    assert all(isinstance(it["steps"], list) for it in items) and items[0]["steps"] == PUBLISHED[0]["steps"]
    if layout != "trl":
        assert [it["id"] for it in items] == ["gsm8k-0", "gsm8k-1", "gsm8k-2"] and items[2]["generator"] == "Llama-3.1-8B-Instruct"
    write_jsonl(tmp_path / "raw.jsonl", RAW_GSM8K)
    s, _ = _bench("pb.json", "--gold", "raw.jsonl")
    assert s["judges"]["reference"]["f1"] == 1.0 and s["gold_attached"] == 3


def test_processbench_from_published_names_bad_rows(tmp_path):
    from qmr.io import DataFileError
    from qmr.processbench import processbench_from_published

    with pytest.raises(DataFileError, match=r"item 0 \(id 'gsm8k-0'\): label: got 5"):
        processbench_from_published([{**PUBLISHED[0], "label": 5}], source="gsm8k.json")


@pytest.mark.slow  # builds and samples a stand-in model (~30 s alone)
def test_rollout_judge_on_the_bench_needs_a_model_and_runs_with_a_local_one(tmp_path, monkeypatch, default_params):
    """`--judges rollout --model DIR`: a stand-in model (built here, chat template) rolls out every prefix;
    without --model the command says what it needs (exit 2)."""
    from qmr.cli import main
    from qmr.devtools.standin import build_standin

    params = {**default_params, "judge": {**default_params["judge"], "judges": {
        **default_params["judge"]["judges"], "rollout": {"kind": "rollout", "samples": 2}}}}  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "pb.json").write_text(json.dumps(ITEMS))
    write_jsonl(tmp_path / "raw.jsonl", RAW_GSM8K)
    bad = CliRunner().invoke(main, ["judge-bench", "pb.json", "--judges", "rollout", "--gold", "raw.jsonl"])
    assert bad.exit_code == 2 and "--model" in bad.output and "Traceback" not in bad.output
    texts = [r["question"] + "\n" + r["answer"] for r in RAW_GSM8K] + [s for it in ITEMS for s in it["steps"]]
    pairs = [(r["question"], "\n".join(ITEMS[2 * i]["steps"])) for i, r in enumerate(RAW_GSM8K)]
    model = build_standin(tmp_path / "standin", "qwen2", texts, pairs=pairs, steps=40)
    scores, shown = _bench("pb.json", "--judges", "rollout,reference", "--gold", "raw.jsonl", "--model", str(model), "--no-ensemble")
    row = scores["judges"]["rollout"]
    assert row["rollouts"] == sum(2 * len(it["steps"]) for it in ITEMS)  # linear: prefixes 0..n-1, 2 samples each
    assert scores["judges"]["reference"]["rollouts"] == 0
    assert re.search(r"^rollout\b", shown, re.M)
    stats = json.loads((tmp_path / "scores.json").read_text())
    assert stats["items"] == len(ITEMS) and stats["gold_attached"] == len(ITEMS)
