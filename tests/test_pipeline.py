"""The whole DVC DAG on a small configuration, in a temporary copy of the project (slow)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _small_params(params: dict) -> dict:
    params["benchmarks"]["train"]["size"] = 64
    params["benchmarks"]["mine"]["size"] = 60
    params["benchmarks"]["test"]["size"] = 60
    params["base"]["toy"].update({"max_steps": 300, "train_seconds": 0, "hidden_size": 128, "intermediate_size": 256})
    keep = {"fp", "gptq-w4a16", "rtn-w2g32"}
    params["quantize"]["variants"] = {k: v for k, v in params["quantize"]["variants"].items() if k in keep}
    params["quantize"]["calibration"]["samples"] = 16
    params["benchmarks"]["control"]["size"] = 30
    params["generate"]["batch_size"] = 64
    params["generate"]["max_new_tokens"] = 48
    params["judge"]["variants"] = ["gptq-w4a16", "rtn-w2g32"]
    params["recovery"]["variants"] = ["rtn-w2g32"]
    params["restore"].update({"max_steps": 3, "batch_size": 4})
    params["benchmarks"]["align"]["size"] = 64
    params["align"].update({"eval_samples": 20, "max_steps": 4, "max_new_tokens": 64})
    return params


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)


@pytest.mark.slow
def test_dvc_repro_small_pipeline(tmp_path):
    work = tmp_path / "qmr"
    work.mkdir()
    shutil.copytree(REPO / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    (work / "metrics").mkdir()
    shutil.copy(REPO / "metrics" / "ablation.md", work / "metrics" / "ablation.md")  # committed, as in a clone
    params = _small_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        assert _run(cmd, work).returncode == 0

    first = _run(["dvc", "repro"], work)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]

    # align: the base model learnt the free-form style; compliance is measured before and after
    align = json.loads((work / "metrics" / "align.json").read_text())["toy"]
    assert align["method"] == "lora_sft" and align["steps"] == 4 and align["examples"] == 64
    assert {"format_compliance", "accuracy"} <= set(align["before"]) and align["after"]["problems"] == 20
    assert json.loads((work / "models" / "quantized" / "toy" / "fp" / "qmr_model.json").read_text())["path"] == "models/aligned/toy"

    metrics = json.loads((work / "metrics" / "evaluate.json").read_text())
    toy = metrics["toy"]
    assert set(toy) == {"fp", "gptq-w4a16", "rtn-w2g32"}
    for _variant, entry in toy.items():
        for bench in ("test", "mine"):
            m = entry[bench]
            assert 0.0 <= m["accuracy"] <= 1.0
            assert m["problems"] == 60
            assert m["flips"] >= 0
        assert entry["control"]["problems"] == 30
        assert entry["size"]["disk_bytes"] > 0
    assert toy["fp"]["test"]["degradation_pct"] == 0.0
    # quantized checkpoints are compressed-tensors with their recipe beside them
    qdir = work / "models" / "quantized" / "toy" / "rtn-w2g32"
    assert (qdir / "recipe.yaml").exists()
    cfg = json.loads((qdir / "config.json").read_text())
    assert "quantization_config" in cfg
    traces = [json.loads(line) for line in (work / "data" / "traces" / "toy" / "fp" / "test.jsonl").read_text().splitlines()]
    assert {"id", "variant", "benchmark", "sample", "prompt", "text", "steps", "pred", "correct", "tokens", "seconds"} <= set(traces[0])

    # locate: every failure of a judged variant has a label; metrics/vote.json per variant
    vote = json.loads((work / "metrics" / "vote.json").read_text())["toy"]
    assert set(vote) == {"gptq-w4a16", "rtn-w2g32"}
    for variant in vote:
        cases = (work / "data" / "judgments" / "toy" / f"{variant}.cases.jsonl").read_text().splitlines()
        labels = (work / "data" / "labels" / "toy" / f"{variant}.jsonl").read_text().splitlines()
        assert len(labels) == len(cases)
    # restore: a record for the restored variant, whether or not pairs were found
    restore = json.loads((work / "metrics" / "restore.json").read_text())["toy"]["rtn-w2g32"]
    assert {"pairs", "trained", "test", "control"} <= set(restore)
    assert {"accuracy_fp", "accuracy_quantized", "accuracy_restored"} <= set(restore["test"])
    # wall-clock numbers live in metrics/speed/ only, so the quality metrics of two runs can be compared byte for byte
    assert json.loads((work / "metrics" / "speed" / "base" / "toy.json").read_text())["seconds"] > 0
    assert "train_seconds" in json.loads((work / "metrics" / "speed" / "restore.json").read_text())["toy"]["rtn-w2g32"]
    quality = [p for p in (work / "metrics").rglob("*.json") if "speed" not in p.parts]
    assert not [p for p in quality if any(k in p.read_text() for k in ('"seconds"', '"tokens_per_s"', '"train_seconds"'))]

    second = _run(["dvc", "repro"], work)
    assert second.returncode == 0
    assert "Running stage" not in second.stdout, second.stdout
