"""The real user's path end to end (issue 15): a preset composed with `--smoke`, its model swapped for a
local stand-in of the same architecture family (the preset's model *name*, dots included), its
benchmarks pointed at the real benchmark files in ../shared/data, its five paid judges at the loopback
server — then `dvc repro`: every stage runs.

Slow (minutes): `pytest -m slow tests/test_real_path.py`. Skipped where ../shared/data is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from qmr.devtools.openai_server import OpenAIStubServer

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
BIN = Path(sys.executable).parent
KEYS = ("DEEPSEEK_API_KEY", "OPENAI_API_KEY", "DASHSCOPE_API_KEY")

# The preset's benchmarks -> the same benchmarks from the local copies (an offline lab's setup).
LOCAL = {
    "gsm8k_train": ("gsm8k/train.jsonl", "gsm8k"),
    "gsm8k": ("gsm8k/test.jsonl", "gsm8k"),
    "math500": ("math/math500_test.jsonl", "math"),
    "aime": ("aime/aime_2022_2025.jsonl", "aime"),
    "math_train": ("math/prm800k_math_train_reconstructed.jsonl", "math"),
    "prm800k": ("prm800k/phase1_train_plus.stepwise-critic.parquet", "prm800k"),
    "mmlu": ("mmlu/test", "mmlu"),
}


def _run(cmd: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1", **env}
    return subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=3600)


def smoke_workspace(work: Path, preset: str, family: str, server_url: str) -> dict:
    """Compose ``preset`` with --smoke in a fresh DVC project at ``work``; returns the params written."""
    work.mkdir(parents=True)
    shutil.copytree(REPO / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "presets", "annotations"):  # (annotations/: where human verdicts go, as in a clone)
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, work / name)
    shutil.copytree(REPO / ".dvc" / "plots", work / "dvc-plots")
    (work / "metrics").mkdir()
    shutil.copy(REPO / "metrics" / "ablation.json", work / "metrics")  # committed (the toy's), as in a clone
    (work / "metrics" / "speed").mkdir()
    shutil.copy(REPO / "metrics" / "speed" / "ablation.json", work / "metrics" / "speed")  # its training seconds, also committed
    assert _run(["git", "init", "-q"], work).returncode == 0
    assert _run(["dvc", "init", "-q"], work).returncode == 0
    shutil.rmtree(work / ".dvc" / "plots", ignore_errors=True)
    shutil.move(work / "dvc-plots", work / ".dvc" / "plots")
    out = _run(["qmr", "params", "preset", preset, "--smoke", "-o", "params.yaml"], work)
    assert out.returncode == 0, out.stderr
    params = yaml.safe_load((work / "params.yaml").read_text())
    (name,) = params["models"]
    assert name == preset  # the hub's name, dots included
    params["models"][name] = {"source": "local", "path": str(work.parent / "standin"), "prompt_style": "chat"}
    LOCAL_RUN = {**LOCAL, "math_train": ("gsm8k/train.jsonl", "gsm8k")}
    for bench, spec in params["benchmarks"].items():
        path, fmt = LOCAL_RUN[bench]
        spec.update(source="local", path=str(DATA / path), format=fmt)
        for key in ("hub_id", "subset", "revision", "data_files"):
            spec.pop(key, None)
    for spec in params["endpoints"].values():
        spec.update(base_url=server_url, max_retries=0, timeout_s=10.0)
    # A 2-bit variant as well (a sweep a user makes): the stand-in keeps its W4/W8 answers, so without it
    # nothing flips, and judge -> silver -> restore would have no pairs to train on. The mining pool is
    # GSM8K's train split (short solutions the CPU stand-in can learn; the preset's is MATH train).
    params["quantize"]["variants"]["rtn-w2g128"] = {"method": "rtn", "bits": 2, "group_size": 128, "symmetric": False}
    params["judge"]["variants"].append("rtn-w2g128")
    params["recovery"]["variants"] = ["rtn-w2g128"]

    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


@pytest.mark.slow
@pytest.mark.parametrize(("preset", "family"), [("qwen2.5-0.5b-instruct", "qwen2"), ("llama-3.2-1b-instruct", "llama")])
def test_every_stage_runs_on_a_smoke_preset_with_a_local_standin(tmp_path, preset, family):
    if not DATA.is_dir():
        pytest.skip(f"{DATA} not found (the real benchmark files)")
    from qmr.align import step_target
    from qmr.devtools.standin import build_standin

    keys = {var: f"sk-standin-{i}-0123456789" for i, var in enumerate(KEYS)}
    work = tmp_path / "work"
    with OpenAIStubServer() as server:
        params = smoke_workspace(work, preset, family, server.url)
        started = time.monotonic()
        (tmp_path / "standin").mkdir()  # params name it (and every stage checks it exists); built below
        prepared = _run(["dvc", "repro", "prepare"], work)
        assert prepared.returncode == 0, prepared.stdout[-3000:] + prepared.stderr[-3000:]
        # the stand-in: a tokenizer trained on GSM8K text, and trained to solve the prepared problems
        train = [json.loads(x) for x in (DATA / "gsm8k" / "train.jsonl").read_text().splitlines()[:1500]]
        records = [json.loads(x) for b in ("gsm8k", "math_train") for x in (work / "data" / "benchmarks" / f"{b}.jsonl").read_text().splitlines()]
        pairs = [(r["question"], t) for r in records if (t := step_target(r))]
        build_standin(tmp_path / "standin", family, [r["question"] + "\n" + r["answer"] for r in train], pairs=pairs,
                      hidden_size=128, layers=2, steps=200)  # fmt: skip
        repro = _run(["dvc", "repro"], work, **keys)
        wall = time.monotonic() - started
    assert repro.returncode == 0, repro.stdout[-6000:] + repro.stderr[-6000:]
    ran = {line.split("'")[1].split("@")[0] for line in (prepared.stdout + repro.stdout).splitlines() if line.startswith("Running stage")}
    stages = set(yaml.safe_load((work / "dvc.yaml").read_text())["stages"])
    assert ran == stages, stages - ran
    evaluate = json.loads((work / "metrics" / "evaluate.json").read_text())
    assert set(evaluate[preset]) == set(params["quantize"]["variants"])
    restore = json.loads((work / "metrics" / "restore.json").read_text())[preset]["rtn-w2g128"]
    silver = json.loads((work / "data" / "silver" / preset / "rtn-w2g128.stats.json").read_text())
    print(f"\n{preset}: silver {silver.get('pairs')} pairs, restore trained: {restore['trained']}")
    report = (work / "metrics" / "report.md").read_text()
    assert preset in report and "## Ablation" not in report
    print(f"\n{preset} ({family} stand-in), smoke DAG: {wall:.0f} s wall; stages: {sorted(ran)}")
    assert not any(k in (work / "metrics" / "vote.json").read_text() for k in keys.values())
