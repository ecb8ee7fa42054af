"""Real-model presets: each composes, validates, and lays out its DVC DAG without downloading anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from qmr.cli import main
from qmr.presets import available, compose

REPO = Path(__file__).resolve().parents[1]
PAPER_MODELS = {
    "qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "qwen2.5-3b-instruct", "qwen2.5-7b-instruct",
    "llama-3.2-1b-instruct", "llama-3.2-3b-instruct", "llama-3.1-8b-instruct",
}  # fmt: skip


@pytest.fixture
def in_repo(monkeypatch):
    if not all((REPO.parent / "shared" / "data" / d).is_dir() for d in ("aime", "math", "prm800k")):
        pytest.skip("presets read AIME, the MATH train split and PRM800K from ../shared/data, not found")
    monkeypatch.chdir(REPO)


def test_one_preset_per_paper_model():
    assert set(available(REPO / "presets")) == PAPER_MODELS
    for name in PAPER_MODELS:
        params = compose(name, REPO / "presets")
        (spec,) = params["models"].values()
        assert spec["source"] == "hub" and len(spec["revision"]) == 40 and int(spec["revision"], 16) >= 0
        assert params["vote"]["baseline"] == "deepseek-r1" and "judges" in params["judge"] and params["judge"]["variants"]


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_preset_validates(in_repo, tmp_path, name):
    out = tmp_path / "params.yaml"
    result = CliRunner().invoke(main, ["params", "preset", name, "-o", str(out)])
    assert result.exit_code == 0, result.output
    check = CliRunner().invoke(main, ["params", "check", str(out)])
    assert check.exit_code == 0 and "ok" in check.output, check.output


def test_unknown_preset_names_the_choices(in_repo):
    result = CliRunner().invoke(main, ["params", "preset", "gpt-5"])
    assert result.exit_code == 2 and "got 'gpt-5'; allowed: llama-3.1-8b-instruct" in result.output


def test_preset_dag_lists_without_downloads(in_repo, tmp_path):
    """`dvc dag` on a preset: the stages for the real model, with no model or dataset fetched."""
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    result = CliRunner().invoke(main, ["params", "preset", "qwen2.5-7b-instruct", "-o", str(work / "params.yaml")])
    assert result.exit_code == 0, result.output
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1"}
    assert subprocess.run(["git", "init", "-q"], cwd=work).returncode == 0
    assert subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=work, env=env).returncode == 0
    dag = subprocess.run([sys.executable, "-m", "dvc", "dag", "--md"], cwd=work, env=env, capture_output=True, text=True)
    assert dag.returncode == 0, dag.stderr
    for stage in ("base@qwen2.5-7b-instruct", "align", "quantize@qwen2.5-7b-instruct-awq-w4a16", "generate@qwen2.5-7b-instruct-gptq-w4a16-math500",
                  "judge@qwen2.5-7b-instruct-smoothquant-w8a8", "restore@qwen2.5-7b-instruct-awq-w4a16", "reevaluate"):  # fmt: skip
        assert stage in dag.stdout, stage
    assert not (work / "models").exists() and not (work / "data").exists()
