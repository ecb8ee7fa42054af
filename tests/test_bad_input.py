"""Bad input beyond params.yaml: benchmark files, checkpoints, stage options.

Each case runs the real `qmr` command in a scratch project and must exit 2 with one message naming the
file or option, the value and what is allowed, print no traceback, and leave what was already computed
untouched. (params.yaml itself: tests/test_params.py; API keys: tests/test_locate_llm.py;
human_verdict.json: tests/test_locate_vote.py; presets: tests/test_presets.py.)
"""

from __future__ import annotations

import copy

import pytest
import yaml
from click.testing import CliRunner

from qmr.cli import main

SENTINEL = '{"already": "computed"}\n'


def _local_benchmark(params: dict, path: str, **spec) -> dict:
    params = copy.deepcopy(params)
    params["benchmarks"]["ext"] = {"source": "local", "path": path, "role": "eval", **spec}
    return params


CASES = [
    # (id, file name -> content, params mutation, command, fragments the message must contain)
    ("broken-json-line", {"ext.jsonl": '{"question": "1+1?", "answer": "#### 2"}\n{"question": "2+2?", "answer": \n'},
     lambda p: _local_benchmark(p, "ext.jsonl"), ["prepare"], ["ext.jsonl:2", "not valid JSON"]),
    ("missing-answer-field", {"ext.jsonl": '{"question": "1+1?", "answer": "#### 2"}\n{"question": "2+2?"}\n'},
     lambda p: _local_benchmark(p, "ext.jsonl"), ["prepare"], ["ext.jsonl", "record 1", "missing field 'answer'"]),
    ("gsm8k-without-final-answer", {"ext.jsonl": '{"question": "1+1?", "answer": "it is 2"}\n'},
     lambda p: _local_benchmark(p, "ext.jsonl", format="gsm8k"), ["prepare"], ["ext.jsonl", "'#### N'"]),
    ("unsupported-file-type", {"ext.txt": "1+1=2\n"},
     lambda p: _local_benchmark(p, "ext.txt"), ["prepare"], ["ext.txt", "'.txt'", "allowed: .jsonl, .json, .csv, .parquet"]),
    ("aime-answer-not-integer", {"ext.jsonl": '{"problem": "p", "answer": "x+1"}\n'},
     lambda p: _local_benchmark(p, "ext.jsonl", format="aime", kind="integer"), ["prepare"], ["ext.jsonl", "'x+1'", "not an integer"]),
    ("mmlu-letter-out-of-range", {"ext.csv": "q,a,b,c,d,E\n"},
     lambda p: _local_benchmark(p, "ext.csv", kind="choice"), ["prepare"], ["ext.csv", "'E'", "allowed: A, B, C, D"]),
    ("empty-benchmark-file", {"ext.jsonl": ""},
     lambda p: _local_benchmark(p, "ext.jsonl"), ["prepare"], ["ext.jsonl", "no records"]),
    ("missing-checkpoint", {"data/benchmarks/test.jsonl": '{"id": "t1", "question": "q", "answer": "1"}\n'},
     None, ["generate", "--model", "toy", "--variant", "gptq-w4a16", "--benchmark", "test"],
     ["models/quantized/toy/gptq-w4a16", "checkpoint not found", "allowed"]),
    ("corrupt-checkpoint", {"data/benchmarks/test.jsonl": '{"id": "t1", "question": "q", "answer": "1"}\n',
                            "models/quantized/toy/gptq-w4a16/config.json": "{not json"},
     None, ["generate", "--model", "toy", "--variant", "gptq-w4a16", "--benchmark", "test"],
     ["models/quantized/toy/gptq-w4a16/config.json", "not valid JSON"]),
    ("unknown-variant-option", {}, None, ["generate", "--model", "toy", "--variant", "gptq-w5", "--benchmark", "test"],
     ["--variant", "'gptq-w5'", "allowed:", "gptq-w4a16"]),
    ("unknown-model-option", {}, None, ["base", "--model", "gpt2"], ["--model", "'gpt2'", "allowed: toy"]),
    # issue 14: every unreadable input is one clear error
    ("benchmark-is-a-directory", {"ext.jsonl/x": ""},
     lambda p: _local_benchmark(p, "ext.jsonl"), ["prepare"], ["ext.jsonl", "a folder without .csv, .jsonl or .parquet files"]),
    ("latin-1-bytes", {"ext.jsonl": b'{"question": "caf\xe9?", "answer": "#### 2"}\n'},
     lambda p: _local_benchmark(p, "ext.jsonl"), ["prepare"], ["ext.jsonl", "not UTF-8"]),
    ("binary-bytes", {"ext.json": bytes(range(256))},
     lambda p: _local_benchmark(p, "ext.json"), ["prepare"], ["ext.json", "not UTF-8"]),
    ("invalid-json-file", {"ext.json": "[{\"question\": 1,"},
     lambda p: _local_benchmark(p, "ext.json"), ["prepare"], ["ext.json", "not valid JSON"]),
    ("json-file-is-a-number", {"ext.json": "42"},
     lambda p: _local_benchmark(p, "ext.json"), ["prepare"], ["ext.json", "allowed: a list of records"]),
    ("invalid-parquet", {"ext.parquet": b"PAR1 this is not parquet"},
     lambda p: _local_benchmark(p, "ext.parquet"), ["prepare"], ["ext.parquet", "not a readable parquet file"]),
    ("non-string-question", {"ext.jsonl": '{"question": 5, "answer": "#### 2"}\n'},
     lambda p: _local_benchmark(p, "ext.jsonl", format="gsm8k"), ["prepare"], ["ext.jsonl", "record 0", "wrong type"]),
    ("record-without-id", {"ext.jsonl": '{"question": "1+1?", "answer": "2", "plan": []}\n'},
     lambda p: _local_benchmark(p, "ext.jsonl", format="toy"), ["prepare"], ["ext.jsonl", "record 0", "'id' = <missing>"]),
    ("same-id-in-two-eval-benchmarks", {"ext.jsonl": '{"id": "x1", "question": "1+1?", "answer": "2", "plan": []}\n',
                                        "ext2.jsonl": '{"id": "x1", "question": "2+2?", "answer": "4", "plan": []}\n'},
     lambda p: {**_local_benchmark(p, "ext.jsonl", format="toy"),
                "benchmarks": {**_local_benchmark(p, "ext.jsonl", format="toy")["benchmarks"],
                               "ext2": {"source": "local", "path": "ext2.jsonl", "role": "eval", "format": "toy"}}},
     ["prepare"], ["benchmarks.ext2", "'x1'", "also in eval benchmark 'ext'"]),
    ("ablation-against-without-a-value", {}, None, ["ablation", "--against", "recovery.subset"],
     ["--against 'recovery.subset'", "expected KEY=VALUE"]),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_naming_it_and_keeps_earlier_work(tmp_path, monkeypatch, default_params, case):
    _, files, mutate, command, fragments = case
    monkeypatch.chdir(tmp_path)
    params = mutate(default_params) if mutate else default_params
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    earlier = tmp_path / "metrics" / "evaluate.json"  # stands for everything computed before
    earlier.parent.mkdir(parents=True, exist_ok=True)
    earlier.write_text(SENTINEL)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    result = CliRunner().invoke(main, command)

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, f"{fragment!r} not in: {result.output}"
    assert {p: p.read_bytes() for p in before} == before  # nothing earlier was touched
    assert not (tmp_path / "data" / "benchmarks" / "ext.jsonl").exists()  # and nothing half-built was left


def test_vllm_on_cpu_and_without_the_extra_are_both_reported(tmp_path, default_params):
    params = copy.deepcopy(default_params)
    params["generate"].update(backend="vllm", device="cpu")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(main, ["params", "check", str(path)])
    assert result.exit_code == 2
    assert "generate.device: got 'cpu'" in result.output
